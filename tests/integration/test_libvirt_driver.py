"""LibvirtDriver against the real libvirtd (tests marked `libvirt`), plus pure
unit tests of the domain XML builder and the accelerator logic (unmarked).

The libvirt tests force TCG (FERRY_VIRT_ACCEL=tcg) except the one that runs
the real probe, give every test its own Ferry host names (several hosts share
one libvirtd) and destroy every domain they defined, even on failure. When
`ferry.image.guest.build_guest_image` works, the migration test boots the
real self-checking guest and reads its GUEST-BOOTED markers; the power-off
test always uses a blank disk, on which SeaBIOS ignores ACPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid as uuidlib
import warnings
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ferry.compute.virt.driver import InstanceNotFound, InstanceSpec, PowerState
from ferry.compute.virt.libvirt import accel
from ferry.compute.virt.libvirt.xml import (
    METADATA_NS,
    DiskConfig,
    DomainConfig,
    build_domain_xml,
    build_probe_xml,
    domain_name,
    domain_uuid,
    parse_ferry_metadata,
)

GUEST_BASE = "guest.raw"
BLANK_BASE = "blank.raw"


# ---------------------------------------------------------------- unit tests


def _config(**over: Any) -> DomainConfig:
    fields: dict[str, Any] = dict(
        name=domain_name("host1", "0b5a8f8e-2f5c-4a43-9d8e-6d3e1c9d1a11"),
        uuid=domain_uuid("host1", "0b5a8f8e-2f5c-4a43-9d8e-6d3e1c9d1a11"),
        domain_type="qemu",
        memory_mb=64,
        vcpus=2,
        disks=(DiskConfig(Path("/srv/i/0b5a/disk")),),
        console_log=Path("/srv/i/0b5a/console.log"),
        host="host1",
        instance_uuid="0b5a8f8e-2f5c-4a43-9d8e-6d3e1c9d1a11",
        display_name="vm <1> & co",
    )
    fields.update(over)
    return DomainConfig(**fields)


def test_domain_xml_builder() -> None:
    cfg = _config()
    xml = build_domain_xml(cfg)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "ferry-host1-0b5a8f8e-2f5c-4a43-9d8e-6d3e1c9d1a11"
    assert root.findtext("uuid") == cfg.uuid
    assert root.findtext("title") == "vm <1> & co"  # escaped, not injected
    assert root.findtext("memory") == str(128 * 1024)  # raised to the 128 MiB minimum
    assert root.findtext("vcpu") == "2"
    os_type = root.find("os/type")
    assert os_type is not None and os_type.get("machine") == "pc"
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert root.find("features/acpi") is not None
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    disk = root.find("devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == "/srv/i/0b5a/disk"  # type: ignore[union-attr]
    assert disk.find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    assert disk.find("target").get("dev") == "vda"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/srv/i/0b5a/console.log"  # type: ignore[union-attr]
    assert serial.find("source").get("append") == "on"  # type: ignore[union-attr]
    assert root.find("devices/console").get("type") == "file"  # type: ignore[union-attr]
    assert root.find("devices/interface") is None
    assert root.find("devices/graphics") is None
    sec = root.find("seclabel")
    assert sec is not None
    assert (sec.get("type"), sec.get("model"), sec.get("relabel")) == ("static", "dac", "no")
    assert sec.findtext("label") == "+0:+0"
    md = parse_ferry_metadata(xml)
    assert md is not None
    assert (md.host, md.instance_uuid, md.name) == (
        "host1",
        "0b5a8f8e-2f5c-4a43-9d8e-6d3e1c9d1a11",
        "vm <1> & co",
    )
    # virDomainGetMetadata returns the bare element: that parses too
    inst = root.find(f"metadata/{{{METADATA_NS}}}instance")
    assert inst is not None
    assert parse_ferry_metadata(ET.tostring(inst, encoding="unicode")) == md
    assert parse_ferry_metadata("<domain><name>x</name></domain>") is None
    assert parse_ferry_metadata("not xml") is None


def test_domain_xml_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        build_domain_xml(_config(domain_type="xen"))
    with pytest.raises(ValueError):
        build_domain_xml(_config(disks=()))
    probe = ET.fromstring(build_probe_xml("p", "kvm", Path("/x/p.raw"), Path("/x/c.log")))
    assert probe.get("type") == "kvm"
    assert probe.find("devices/disk/readonly") is not None
    assert probe.find("devices/disk/driver").get("type") == "raw"  # type: ignore[union-attr]


def test_domain_identity_differs_per_host() -> None:
    u = "0b5a8f8e-2f5c-4a43-9d8e-6d3e1c9d1a11"
    assert domain_name("host1", u) != domain_name("host2", u)
    assert domain_uuid("host1", u) != domain_uuid("host2", u)
    assert domain_uuid("host1", u) == domain_uuid("host1", u)
    assert domain_uuid("host1", u) == str(uuidlib.uuid5(uuidlib.UUID(u), "host1"))
    uuidlib.UUID(domain_uuid("host1", "not-a-uuid"))  # still a valid UUID


def test_probe_sector_matches_source(tmp_path: Path) -> None:
    sector = accel.probe_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa")
    assert accel.PROBE_MARKER.encode() in sector
    if not (shutil.which("as") and shutil.which("ld")):
        pytest.skip("binutils (as, ld) not installed")
    src = tmp_path / "probe.S"
    src.write_text(accel.PROBE_ASM)
    subprocess.run(["as", "--32", "-o", tmp_path / "probe.o", src], check=True)
    subprocess.run(
        ["ld", "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary",
         "-o", tmp_path / "probe.bin", tmp_path / "probe.o"],
        check=True,
    )  # fmt: skip
    assert (tmp_path / "probe.bin").read_bytes() == sector


class _FakeConn:
    def getLibVersion(self) -> int:
        return 9000000

    def getVersion(self) -> int:
        return 7002022

    def createXML(self, xml: str, flags: int) -> Any:
        raise AssertionError("a cached or forced verdict must not probe")


def test_accel_override_and_cache(tmp_path: Path) -> None:
    assert accel.accel_override({}) is None
    assert accel.accel_override({"FERRY_VIRT_ACCEL": "auto"}) is None
    assert accel.accel_override({"FERRY_VIRT_ACCEL": "KVM"}) == "kvm"
    assert accel.accel_override({"FERRY_VIRT_ACCEL": "tcg"}) == "tcg"
    with pytest.raises(accel.DriverError):
        accel.accel_override({"FERRY_VIRT_ACCEL": "hvf"})
    assert accel.domain_type_for("tcg") == "qemu"
    assert accel.domain_type_for("kvm") == "kvm"
    conn = _FakeConn()
    forced = accel.detect_accel(conn, tmp_path, env={"FERRY_VIRT_ACCEL": "kvm"})
    assert forced == "kvm"
    assert accel.detect_accel(conn, tmp_path, env={}, kvm_device=tmp_path / "nokvm") == "tcg"
    (tmp_path / accel.CACHE_FILE).write_text(json.dumps({accel.cache_key(conn): {"accel": "kvm"}}))
    assert accel.detect_accel(conn, tmp_path, env={}, kvm_device=tmp_path) == "kvm"
    assert accel.default_cache_dir({"FERRY_CACHE_DIR": "/c"}) == Path("/c")
    assert accel.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/ferry")


# ---------------------------------------------------------- libvirt fixtures


def _libvirt_missing() -> str | None:
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    for tool in ("qemu-img", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not any(Path(p).exists() for p in ("/usr/sbin/libvirtd", "/usr/bin/libvirtd")):
        return "libvirtd is not installed"
    return None


@pytest.fixture(scope="module")
def libvirt_ready() -> None:
    reason = _libvirt_missing()
    if reason:
        pytest.skip(reason)
    from ferry.compute.virt.libvirt.daemons import ensure_daemons

    ensure_daemons()


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory, libvirt_ready: None) -> Path | None:
    """A bootable self-checking guest, or None when the builder cannot make one."""
    try:
        from ferry.image.guest import build_guest_image
    except ImportError:
        return None
    try:
        out = tmp_path_factory.mktemp("guest") / GUEST_BASE
        return build_guest_image(out, "lvtest")
    except Exception as e:  # the builder needs apt/network; lifecycle tests go on
        warnings.warn(f"no bootable guest for the libvirt tests: {e}", stacklevel=1)
        return None


def _purge_domains(prefix: str) -> None:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains(0):
            if not dom.name().startswith(f"ferry-{prefix}"):
                continue
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


MakeHost = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def make_host(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    libvirt_ready: None,
    guest_image: Path | None,
) -> AsyncIterator[MakeHost]:
    """Factory of initialised LibvirtDrivers for Ferry hosts with their own
    instances dirs, _base holding blank.raw (and guest.raw when buildable)."""
    from ferry.compute.virt.libvirt import LibvirtDriver

    monkeypatch.setenv("FERRY_VIRT_ACCEL", "tcg")
    prefix = f"t{uuidlib.uuid4().hex[:8]}"
    drivers: list[Any] = []

    async def make(name: str) -> Any:
        instances = tmp_path / name / "instances"
        driver = LibvirtDriver(f"{prefix}-{name}", instances)
        drivers.append(driver)
        await driver.init_host()
        base = instances / "_base"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "raw", str(base / BLANK_BASE), "32M"], check=True
        )
        if guest_image is not None:
            shutil.copy(guest_image, base / GUEST_BASE)
        return driver

    try:
        yield make
    finally:
        await asyncio.to_thread(_purge_domains, prefix)
        for driver in drivers:
            await driver.cleanup_host()


def _spec(base: str = BLANK_BASE, root_gb: int = 1, **over: Any) -> InstanceSpec:
    fields: dict[str, Any] = dict(
        uuid=str(uuidlib.uuid4()),
        name="vm",
        vcpus=1,
        memory_mb=128,
        root_gb=root_gb,
        image_id="img-1",
        base_name=base,
        base_format="raw",
    )
    fields.update(over)
    return InstanceSpec(**fields)


async def _wait_console(driver: Any, uuid: str, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = await driver.console_output(uuid)
        if needle in out:
            return out
        await asyncio.sleep(0.25)
    raise AssertionError(f"{needle!r} not on the console within {timeout}s: {out[-500:]!r}")


def _qemu_img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


# ----------------------------------------------------------- libvirt tests


@pytest.mark.libvirt
def test_accel_probe_decides_and_caches(tmp_path: Path, libvirt_ready: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        verdict = accel.detect_accel(conn, tmp_path, env={})
        assert verdict in ("kvm", "tcg")
        if not Path("/dev/kvm").exists():
            return
        entry = json.loads((tmp_path / accel.CACHE_FILE).read_text())[accel.cache_key(conn)]
        assert entry["accel"] == verdict
        assert entry["kvm"]["ok"] == (verdict == "kvm")
        if verdict == "tcg":
            assert entry["tcg"]["ok"] is True
        def probe_again(*_: object, **__: object) -> None:
            raise AssertionError("probed again although the verdict is cached")

        monkeypatch.setattr(accel, "probe_boot", probe_again)
        assert accel.detect_accel(conn, tmp_path, env={}) == verdict
    finally:
        conn.close()


@pytest.mark.libvirt
def test_orphan_probe_domains_are_swept(tmp_path: Path, libvirt_ready: None) -> None:
    """A prober killed mid-probe leaves its transient guest running; the next
    probe destroys it, and never a probe whose prober still lives."""
    import libvirt

    dead = subprocess.Popen(["true"])
    dead.wait()
    conn = libvirt.open("qemu:///system")
    made = []
    try:
        for pid in (dead.pid, os.getpid()):
            disk = tmp_path / f"{pid}.raw"
            disk.write_bytes(accel.probe_sector())
            name = f"{accel.PROBE_PREFIX}{pid}-test"
            conn.createXML(build_probe_xml(name, "qemu", disk, tmp_path / f"{pid}.log"), 0)
            made.append(name)
        assert accel.sweep_orphan_probes(conn) == [made[0]]
        running = {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        assert made[0] not in running and made[1] in running
    finally:
        for name in made:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
        conn.close()


@pytest.mark.libvirt
async def test_lifecycle_forced_power_off_and_destroy(make_host: MakeHost) -> None:
    host = await make_host("host1")
    spec = _spec(BLANK_BASE, root_gb=1)
    idir = host.instances_path / spec.uuid

    assert await host.power_state(spec.uuid) == PowerState.NOSTATE
    await host.spawn(spec)
    assert await host.power_state(spec.uuid) == PowerState.RUNNING
    await host.spawn(spec)  # idempotent: same disk, still running
    assert await host.power_state(spec.uuid) == PowerState.RUNNING
    assert await host.list_instances() == [spec.uuid]

    disk = idir / "disk"
    info = _qemu_img_info(disk)
    assert info["backing-filename"] == f"../_base/{BLANK_BASE}"
    assert disk.stat().st_uid == 0  # no chown to libvirt-qemu

    [di] = await host.disk_info(spec.uuid, idir)
    assert (di.name, di.format, di.backing_name) == ("disk", "qcow2", BLANK_BASE)
    assert di.virtual_size == 1 << 30
    assert 0 < di.disk_size < 16 << 20

    # SeaBIOS with nothing to boot ignores ACPI: power_off must force it.
    start = time.monotonic()
    await host.power_off(spec.uuid, timeout=2.0, retry_interval=0.5)
    elapsed = time.monotonic() - start
    assert await host.power_state(spec.uuid) == PowerState.SHUTDOWN
    assert 1.5 <= elapsed < 15, elapsed
    await host.power_off(spec.uuid, timeout=2.0, retry_interval=0.5)  # already off: no-op

    await host.power_on(spec.uuid)
    assert await host.power_state(spec.uuid) == PowerState.RUNNING
    await host.power_on(spec.uuid)  # no-op when running
    await host.power_off(spec.uuid, timeout=0, retry_interval=1)  # timeout 0: hard stop
    assert await host.power_state(spec.uuid) == PowerState.SHUTDOWN

    res = await host.resources()
    assert res.hypervisor_type == "QEMU" and res.vcpus >= 1 and res.memory_mb > 0
    assert res.disk_gb > 0 and res.hypervisor_version > 0

    await host.power_on(spec.uuid)
    await host.destroy(spec.uuid)
    assert await host.power_state(spec.uuid) == PowerState.NOSTATE
    assert await host.list_instances() == []
    assert disk.exists()  # files are left alone
    await host.destroy(spec.uuid)  # no-op when absent
    await host.power_off(spec.uuid, timeout=1, retry_interval=0.5)  # no-op when absent
    with pytest.raises(InstanceNotFound):
        await host.power_on(spec.uuid)


@pytest.mark.libvirt
async def test_spawn_without_base_and_small_root(make_host: MakeHost) -> None:
    host = await make_host("host1")
    blank = _spec("", root_gb=1)
    await host.spawn(blank)
    [di] = await host.disk_info(blank.uuid, host.instances_path / blank.uuid)
    assert (di.format, di.backing_name, di.virtual_size) == ("qcow2", "", 1 << 30)
    # root_gb 0 (or smaller than the base) takes the base's size: 32 MiB
    small = _spec(BLANK_BASE, root_gb=0)
    await host.spawn(small)
    [di] = await host.disk_info(small.uuid, host.instances_path / small.uuid)
    assert di.virtual_size == 32 << 20
    assert sorted(await host.list_instances()) == sorted([blank.uuid, small.uuid])


@pytest.mark.libvirt
async def test_migrate_to_other_host_and_revert(
    make_host: MakeHost, guest_image: Path | None
) -> None:
    host1 = await make_host("host1")
    host2 = await make_host("host2")
    bootable = guest_image is not None
    spec = _spec(GUEST_BASE if bootable else BLANK_BASE, root_gb=0)
    src = host1.instances_path / spec.uuid
    resize = host1.instances_path / f"{spec.uuid}_resize"
    dst = host2.instances_path / spec.uuid

    await host1.spawn(spec)
    assert await host1.power_state(spec.uuid) == PowerState.RUNNING
    if bootable:
        await _wait_console(host1, spec.uuid, "GUEST-BOOTED id=lvtest boot=1 payload=ok")
        start = time.monotonic()
        await host1.power_off(spec.uuid, timeout=60, retry_interval=5)
        assert time.monotonic() - start < 30  # the guest acted on ACPI, not forced
    else:
        await host1.power_off(spec.uuid, timeout=1, retry_interval=0.5)
    assert await host1.power_state(spec.uuid) == PowerState.SHUTDOWN

    # what the conductor does: keep the source as _resize, copy the disk over
    src.rename(resize)
    out = await host1.console_output(spec.uuid)  # read from _resize now
    assert out == (resize / "console.log").read_bytes().decode(errors="replace")
    assert ("boot=1 payload=ok" in out) == bootable
    [di] = await host1.disk_info(spec.uuid, resize)
    assert di.backing_name == spec.base_name
    dst.mkdir(parents=True)
    shutil.copy(resize / "disk", dst / "disk")

    await host2.finish_migration(spec, power_on=True)
    assert await host2.power_state(spec.uuid) == PowerState.RUNNING
    info = _qemu_img_info(dst / "disk")
    assert info["backing-filename"] == f"../_base/{spec.base_name}"
    backing = Path(info["full-backing-filename"]).resolve()
    assert backing == (host2.instances_path / "_base" / spec.base_name).resolve()
    assert await host1.list_instances() == [spec.uuid]  # still defined (off) on the source
    assert await host2.list_instances() == [spec.uuid]
    assert await host1.power_state(spec.uuid) == PowerState.SHUTDOWN
    if bootable:
        await _wait_console(host2, spec.uuid, "GUEST-BOOTED id=lvtest boot=2 payload=ok")
    await host2.finish_migration(spec, power_on=True)  # idempotent re-send
    assert await host2.power_state(spec.uuid) == PowerState.RUNNING

    # revert: drop the target, put the source back, boot it there again
    await host2.destroy(spec.uuid)
    assert await host2.list_instances() == []
    shutil.rmtree(dst)
    resize.rename(src)
    await host1.finish_revert_migration(spec, power_on=True)
    assert await host1.power_state(spec.uuid) == PowerState.RUNNING
    await host1.finish_revert_migration(spec, power_on=True)  # idempotent
    if bootable:
        # host1's copy had booted once: its counter says 2 now
        out = await _wait_console(host1, spec.uuid, "GUEST-BOOTED id=lvtest boot=2 payload=ok")
        assert "boot=1 payload=ok" in out

    await host1.destroy(spec.uuid)
    assert await host1.list_instances() == []
    assert await host1.power_state(spec.uuid) == PowerState.NOSTATE
