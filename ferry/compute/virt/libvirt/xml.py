"""Domain XML for Ferry guests: pure functions, no libvirt import.

`build_domain_xml(DomainConfig)` renders the persistent definition of one
instance on one Ferry host; `build_probe_xml` the transient domain the
accelerator probe boots; `parse_ferry_metadata` reads back the
`<ferry:instance>` element that tells which Ferry host owns a domain.

Several Ferry hosts may share one libvirtd, so a domain's name and UUID are
derived from (host, instance uuid): see `domain_name` and `domain_uuid`.

To extend (e.g. network ports, config drive, more disks): add a field to
`DomainConfig`, render it in `build_domain_xml` with ElementTree (never by
string formatting, so paths and names are escaped), and pin it in the unit
test in tests/integration/test_libvirt_driver.py.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

#: XML namespace of Ferry's element inside <metadata>.
METADATA_NS = "urn:ferry:libvirt:instance:1"
#: Prefix libvirt writes for that namespace when it re-serialises the element.
METADATA_PREFIX = "ferry"
#: Every Ferry domain name starts with this.
NAME_PREFIX = "ferry-"
#: Smallest guest RAM that boots (64 MiB hangs the test guest).
MIN_MEMORY_MB = 128

ET.register_namespace(METADATA_PREFIX, METADATA_NS)


def domain_name(host: str, instance_uuid: str) -> str:
    """Libvirt domain name of an instance on a Ferry host (unique per host)."""
    return f"{NAME_PREFIX}{host}-{instance_uuid}"


def domain_uuid(host: str, instance_uuid: str) -> str:
    """Libvirt domain UUID: uuid5(instance uuid, host), so it differs per host.

    An instance id that is not a UUID is hashed into one first.
    """
    try:
        namespace = uuidlib.UUID(instance_uuid)
    except ValueError:
        namespace = uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"ferry:instance:{instance_uuid}")
    return str(uuidlib.uuid5(namespace, host))


@dataclass(frozen=True)
class DiskConfig:
    path: Path
    format: str = "qcow2"  # "qcow2" | "raw"
    target: str = "vda"
    cache: str = "writeback"  # "none" needs O_DIRECT, which tmpfs lacks
    readonly: bool = False


@dataclass(frozen=True)
class DomainConfig:
    name: str
    uuid: str
    #: libvirt domain type: "kvm" (hardware) or "qemu" (TCG)
    domain_type: str
    memory_mb: int
    vcpus: int
    disks: tuple[DiskConfig, ...]
    console_log: Path
    #: Ferry metadata: owning host, instance uuid, display name
    host: str = ""
    instance_uuid: str = ""
    display_name: str = ""
    machine: str = "pc"
    arch: str = "x86_64"
    extra_metadata: dict[str, str] = field(default_factory=dict)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _root_seclabel(domain: ET.Element) -> None:
    """Run QEMU as root:root and never chown/relabel files.

    Debian's libvirt runs QEMU as libvirt-qemu with dynamic ownership (it
    chowns disks on start and back on stop). That breaks on directories
    libvirt-qemu cannot traverse (pytest tmp dirs are 0700) and on relative
    backing files, and it would leave Ferry's files owned by another user.
    A static DAC label with relabel='no' avoids all three.
    """
    sec = _sub(domain, "seclabel", type="static", model="dac", relabel="no")
    _sub(sec, "label", "+0:+0")


def _serial_console(devices: ET.Element, log: Path) -> None:
    # libvirtd opens the file itself (root, O_APPEND) and passes the fd to
    # QEMU, so the log survives restarts and stays readable by Ferry.
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(log), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=str(log), append="on")
    _sub(console, "target", type="serial", port="0")


def build_domain_xml(cfg: DomainConfig) -> str:
    """The persistent definition of a Ferry guest (SeaBIOS, boots from vda)."""
    if cfg.domain_type not in ("kvm", "qemu"):
        raise ValueError(f"domain_type must be 'kvm' or 'qemu', not {cfg.domain_type!r}")
    if not cfg.disks:
        raise ValueError("a Ferry guest needs at least one disk")
    domain = ET.Element("domain", type=cfg.domain_type)
    _sub(domain, "name", cfg.name)
    _sub(domain, "uuid", cfg.uuid)
    if cfg.display_name:
        _sub(domain, "title", cfg.display_name)

    metadata = _sub(domain, "metadata")
    inst = ET.SubElement(metadata, f"{{{METADATA_NS}}}instance")
    _sub(inst, f"{{{METADATA_NS}}}host", cfg.host)
    _sub(inst, f"{{{METADATA_NS}}}uuid", cfg.instance_uuid)
    if cfg.display_name:
        _sub(inst, f"{{{METADATA_NS}}}name", cfg.display_name)
    for key, value in sorted(cfg.extra_metadata.items()):
        _sub(inst, f"{{{METADATA_NS}}}{key}", value)

    memory_kib = str(max(cfg.memory_mb, MIN_MEMORY_MB) * 1024)
    _sub(domain, "memory", memory_kib, unit="KiB")
    _sub(domain, "currentMemory", memory_kib, unit="KiB")
    _sub(domain, "vcpu", str(max(cfg.vcpus, 1)), placement="static")

    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch=cfg.arch, machine=cfg.machine)
    _sub(os_el, "boot", dev="hd")
    _sub(os_el, "bootmenu", enable="no")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    for disk in cfg.disks:
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type=disk.format, cache=disk.cache)
        _sub(d, "source", file=str(disk.path))
        _sub(d, "target", dev=disk.target, bus="virtio")
        if disk.readonly:
            _sub(d, "readonly")
    _sub(devices, "controller", type="usb", model="none")
    _serial_console(devices, cfg.console_log)
    _sub(devices, "memballoon", model="none")
    _root_seclabel(domain)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def build_probe_xml(name: str, domain_type: str, disk: Path, console_log: Path) -> str:
    """A transient 128 MiB guest that boots the probe sector from a raw disk."""
    cfg = DomainConfig(
        name=name,
        uuid=str(uuidlib.uuid4()),
        domain_type=domain_type,
        memory_mb=MIN_MEMORY_MB,
        vcpus=1,
        disks=(DiskConfig(disk, format="raw", readonly=True),),
        console_log=console_log,
        host="",
        instance_uuid="",
        display_name="ferry accelerator probe",
    )
    return build_domain_xml(cfg)


@dataclass(frozen=True)
class FerryMetadata:
    host: str
    instance_uuid: str
    name: str = ""


def parse_ferry_metadata(xml: str) -> FerryMetadata | None:
    """Read Ferry's element from a full domain XML or from the bare element
    (what virDomainGetMetadata returns). None when it is absent or malformed."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    tag = f"{{{METADATA_NS}}}instance"
    inst = root if root.tag == tag else root.find(f"./metadata/{tag}")
    if inst is None:
        return None
    host = inst.findtext(f"{{{METADATA_NS}}}host") or ""
    uuid = inst.findtext(f"{{{METADATA_NS}}}uuid") or ""
    if not host or not uuid:
        return None
    return FerryMetadata(host, uuid, inst.findtext(f"{{{METADATA_NS}}}name") or "")
