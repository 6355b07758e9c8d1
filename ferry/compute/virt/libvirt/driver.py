"""LibvirtDriver: real QEMU guests through libvirtd (qemu:///system).

Several Ferry hosts may share one libvirtd (a test machine runs host1,
host2, ... each with its own instances directory). A domain therefore
belongs to (host, instance): its name is ``ferry-<host>-<uuid>``, its UUID
uuid5(instance uuid, host), and a ``<ferry:instance>`` metadata element
carries both; `list_instances` only returns this host's domains.

Files: ``<instances>/<uuid>/disk`` is a qcow2 overlay whose backing file is
stored relative (``../_base/<name>``), so the directory may be renamed to
``<uuid>_resize`` or copied to another host. ``console.log`` beside it gets
the serial console (appended across boots). QEMU runs as root with no
relabelling (see `xml._root_seclabel`), so files stay root's.

Every blocking libvirt call runs in a thread (asyncio.to_thread); qemu-img
runs as an asyncio subprocess. Every method is idempotent.

To extend: add disks/ports to `_domain_config` (and `xml.DomainConfig`);
extra disk files named ``disk.*`` are already reported by `disk_info` and
rebased by `finish_migration`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from ferry.compute.virt.driver import (
    DiskInfo,
    DriverError,
    HostResources,
    InstanceNotFound,
    InstanceSpec,
    PowerState,
    VirtDriver,
)
from ferry.compute.virt.libvirt.accel import Accel, detect_accel, domain_type_for
from ferry.compute.virt.libvirt.daemons import DaemonError, ensure_daemons
from ferry.compute.virt.libvirt.xml import (
    METADATA_NS,
    NAME_PREFIX,
    DiskConfig,
    DomainConfig,
    build_domain_xml,
    domain_name,
    domain_uuid,
    parse_ferry_metadata,
)

BASE_DIR = "_base"
RESIZE_SUFFIX = "_resize"
ROOT_DISK = "disk"
CONSOLE_LOG = "console.log"
GiB = 1 << 30

_POWER_STATES: dict[int, PowerState] = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,  # idle vCPUs, still running
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,  # shutting down, not off yet
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}

#: states in which a guest can act on an ACPI power-button press
_ACPI_STATES = (
    libvirt.VIR_DOMAIN_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED,
    libvirt.VIR_DOMAIN_SHUTDOWN,
)

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0)
)

_error_handler_installed = False


def _quiet_libvirt() -> None:
    """libvirt-python prints every error to stderr; we raise them instead."""
    global _error_handler_installed
    if not _error_handler_installed:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _error_handler_installed = True


def _no_domain(e: libvirt.libvirtError) -> bool:
    return e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def _not_running(e: libvirt.libvirtError) -> bool:
    return e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID


@contextlib.contextmanager
def _libvirt_errors(action: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as e:
        raise DriverError(f"{action}: {e}") from e


def is_disk_file(name: str) -> bool:
    """Disk files of an instance directory: "disk" and "disk.<suffix>" (Nova's
    disk.local, disk.eph0, disk.swap, disk.config), not temporary ones."""
    if name == ROOT_DISK:
        return True
    return name.startswith(ROOT_DISK + ".") and not name.endswith((".part", ".tmp"))


async def _run(*args: str, cwd: Path | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise DriverError(
            f"{' '.join(args)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}"
        )
    return out.decode()


async def qemu_img_info(path: Path) -> dict[str, Any]:
    """`qemu-img info` as a dict; -U so a file a running guest holds can be read."""
    out = await _run("qemu-img", "info", "-U", "--output=json", str(path))
    info: dict[str, Any] = json.loads(out)
    return info


class LibvirtDriver(VirtDriver):
    hypervisor_type = "QEMU"

    def __init__(
        self,
        host: str,
        instances_path: Path,
        *,
        uri: str = "qemu:///system",
        accel: Accel | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(host, Path(instances_path))
        self.uri = uri
        #: "kvm" or "tcg"; decided in init_host unless given here
        self.accel: Accel | None = accel
        self._cache_dir = cache_dir
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        # (QEMU version, CPU model) of the open connection. libvirtd answers
        # getVersion/getCapabilities in seconds on some hosts (it re-probes
        # QEMU), which made heartbeats miss service_down_time; they change only
        # with a new libvirtd/QEMU, i.e. a new connection.
        self._static: tuple[int, str] | None = None

    # ---- connection and lookups (blocking; call through asyncio.to_thread) ----

    def _connection(self) -> Any:
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None
                self._static = None
            _quiet_libvirt()
            try:
                ensure_daemons()
            except DaemonError as e:
                raise DriverError(str(e)) from e
            with _libvirt_errors(f"connecting to {self.uri}"):
                self._conn = libvirt.open(self.uri)
            return self._conn

    def _accel(self) -> Accel:
        if self.accel is None:
            self.accel = detect_accel(self._connection(), self._cache_dir)
        return self.accel

    def _name(self, uuid: str) -> str:
        return domain_name(self.host, uuid)

    def _lookup(self, uuid: str) -> Any:
        """The domain of `uuid` on this host, None when it is not defined."""
        conn = self._connection()
        try:
            return conn.lookupByName(self._name(uuid))
        except libvirt.libvirtError as e:
            if _no_domain(e):
                return None
            raise DriverError(f"looking up {self._name(uuid)}: {e}") from e

    def _dir(self, uuid: str) -> Path:
        return self.instances_path / uuid

    def _base(self, name: str) -> Path:
        return self.instances_path / BASE_DIR / name

    # ---- domain definition ----

    def _domain_config(self, spec: InstanceSpec) -> DomainConfig:
        d = self._dir(spec.uuid)
        return DomainConfig(
            name=self._name(spec.uuid),
            uuid=domain_uuid(self.host, spec.uuid),
            domain_type=domain_type_for(self._accel()),
            memory_mb=spec.memory_mb,
            vcpus=spec.vcpus,
            disks=(DiskConfig(d / ROOT_DISK, format="qcow2"),),
            console_log=d / CONSOLE_LOG,
            host=self.host,
            instance_uuid=spec.uuid,
            display_name=spec.name,
            extra_metadata={"image": spec.image_id} if spec.image_id else {},
        )

    def _define(self, spec: InstanceSpec) -> Any:
        """Define (or redefine, which is idempotent) the domain; returns it."""
        xml = build_domain_xml(self._domain_config(spec))
        with _libvirt_errors(f"defining {self._name(spec.uuid)}"):
            return self._connection().defineXML(xml)

    def _start(self, dom: Any) -> None:
        """Boot a defined domain; no-op when it runs, resume when paused."""
        with _libvirt_errors(f"starting {dom.name()}"):
            state = dom.state()[0]
            if state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
                dom.pMWakeup(0)
            elif not dom.isActive():
                try:
                    dom.create()
                except libvirt.libvirtError as e:
                    if not dom.isActive():  # a concurrent start won: fine
                        raise e

    def _define_and_start(self, spec: InstanceSpec, start: bool) -> None:
        dom = self._define(spec)
        if start:
            self._start(dom)

    # ---- disks ----

    async def _create_root_disk(self, spec: InstanceSpec) -> None:
        d = self._dir(spec.uuid)
        disk = d / ROOT_DISK
        if disk.exists():
            return
        part = d / (ROOT_DISK + ".part")
        part.unlink(missing_ok=True)
        size = max(spec.root_gb, 0) * GiB
        if spec.base_name:
            base = self._base(spec.base_name)
            if not base.is_file():
                raise DriverError(f"base image {base} is missing")
            info = await qemu_img_info(base)
            if info.get("format") != spec.base_format:
                raise DriverError(
                    f"base image {base} is {info.get('format')}, not {spec.base_format}"
                )
            size = max(size, int(info["virtual-size"]))
            await _run(
                "qemu-img", "create", "-q", "-f", "qcow2",
                "-F", spec.base_format, "-b", f"../{BASE_DIR}/{spec.base_name}",
                part.name, str(size),
                cwd=d,
            )  # fmt: skip
        else:
            if size <= 0:
                raise DriverError(f"instance {spec.uuid} has neither a base image nor root_gb")
            await _run("qemu-img", "create", "-q", "-f", "qcow2", part.name, str(size), cwd=d)
        part.replace(disk)

    async def _rebase_disks(self, spec: InstanceSpec, directory: Path) -> None:
        """Point every qcow2 overlay in `directory` at this host's _base copy.

        The root disk goes to ../_base/<spec.base_name>; other overlays keep
        their backing file's name (made relative). Unsafe rebase (-u) only
        rewrites the header: the base content is the same on every host.
        """
        for path in sorted(p for p in directory.iterdir() if is_disk_file(p.name)):
            info = await qemu_img_info(path)
            current = info.get("backing-filename")
            if info.get("format") != "qcow2" or not current:
                continue
            if path.name == ROOT_DISK:
                if not spec.base_name:
                    raise DriverError(f"{path} has backing file {current} but no base image given")
                name, fmt = spec.base_name, spec.base_format
            else:
                name = Path(current).name
                fmt = info.get("backing-filename-format") or "raw"
            target = f"../{BASE_DIR}/{name}"
            if not self._base(name).is_file():
                raise DriverError(f"base image {self._base(name)} is missing")
            if current == target and info.get("backing-filename-format") == fmt:
                continue
            await _run(
                "qemu-img", "rebase", "-u", "-f", "qcow2", "-F", fmt, "-b", target, path.name,
                cwd=directory,
            )  # fmt: skip

    # ---- VirtDriver ----

    async def init_host(self) -> None:
        self.instances_path.mkdir(parents=True, exist_ok=True)
        (self.instances_path / BASE_DIR).mkdir(exist_ok=True)
        await asyncio.to_thread(self._connection)
        await asyncio.to_thread(self._accel)

    async def cleanup_host(self) -> None:
        def close() -> None:
            with self._conn_lock:
                if self._conn is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)

    async def spawn(self, spec: InstanceSpec) -> None:
        self._dir(spec.uuid).mkdir(parents=True, exist_ok=True)
        await self._create_root_disk(spec)
        await asyncio.to_thread(self._define_and_start, spec, True)

    async def power_off(self, uuid: str, timeout: float, retry_interval: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        poll = max(min(retry_interval, 0.25), 0.05) if retry_interval > 0 else 0.25

        def acpi_once() -> str:
            """Send one ACPI request: "off" (already off or gone), "sent", or
            "force" (paused/crashed/suspended guests cannot act on ACPI)."""
            dom = self._lookup(uuid)
            if dom is None:
                return "off"
            try:
                state = dom.state()[0]
                if state == libvirt.VIR_DOMAIN_SHUTOFF:
                    return "off"
                if state not in _ACPI_STATES:
                    return "force"
                dom.shutdown()
            except libvirt.libvirtError as e:
                if _no_domain(e) or _not_running(e):
                    return "off" if self._is_off(uuid) else "sent"
                raise DriverError(f"shutting down {self._name(uuid)}: {e}") from e
            return "sent"

        while loop.time() < deadline:
            outcome = await asyncio.to_thread(acpi_once)
            if outcome == "off":
                return
            if outcome == "force":
                break
            next_send = min(loop.time() + max(retry_interval, poll), deadline)
            while loop.time() < next_send:
                await asyncio.sleep(min(poll, max(next_send - loop.time(), 0.0)))
                if await asyncio.to_thread(self._is_off, uuid):
                    return
        await asyncio.to_thread(self._hard_stop, uuid)

    def _is_off(self, uuid: str) -> bool:
        dom = self._lookup(uuid)
        if dom is None:
            return True
        try:
            return not dom.isActive()
        except libvirt.libvirtError as e:
            if _no_domain(e):
                return True
            raise DriverError(f"checking {self._name(uuid)}: {e}") from e

    def _hard_stop(self, uuid: str) -> None:
        dom = self._lookup(uuid)
        if dom is None:
            return
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as e:
            if not (_no_domain(e) or _not_running(e)):
                raise DriverError(f"destroying {self._name(uuid)}: {e}") from e

    async def power_on(self, uuid: str) -> None:
        def start() -> None:
            dom = self._lookup(uuid)
            if dom is None:
                raise InstanceNotFound(f"instance {uuid} is not defined on {self.host}")
            self._start(dom)

        await asyncio.to_thread(start)

    async def power_state(self, uuid: str) -> PowerState:
        def state() -> PowerState:
            dom = self._lookup(uuid)
            if dom is None:
                return PowerState.NOSTATE
            try:
                return _POWER_STATES.get(dom.state()[0], PowerState.NOSTATE)
            except libvirt.libvirtError as e:
                if _no_domain(e):
                    return PowerState.NOSTATE
                raise DriverError(f"reading state of {self._name(uuid)}: {e}") from e

        return await asyncio.to_thread(state)

    async def destroy(self, uuid: str) -> None:
        def destroy() -> None:
            self._hard_stop(uuid)
            dom = self._lookup(uuid)
            if dom is None:
                return
            try:
                try:
                    dom.undefineFlags(_UNDEFINE_FLAGS)
                except libvirt.libvirtError as e:
                    if _no_domain(e):
                        return
                    # Older libvirt or a flag the driver rejects: plain undefine.
                    dom.undefine()
            except libvirt.libvirtError as e:
                if not _no_domain(e):
                    raise DriverError(f"undefining {self._name(uuid)}: {e}") from e

        await asyncio.to_thread(destroy)

    async def disk_info(self, uuid: str, directory: Path) -> list[DiskInfo]:
        directory = Path(directory)
        if not (directory / ROOT_DISK).is_file():
            raise DriverError(f"{directory / ROOT_DISK} does not exist")
        disks = []
        for path in sorted(p for p in directory.iterdir() if is_disk_file(p.name)):
            info = await qemu_img_info(path)
            backing = info.get("backing-filename") or ""
            disks.append(
                DiskInfo(
                    name=path.name,
                    format=str(info.get("format", "raw")),
                    virtual_size=int(info["virtual-size"]),
                    disk_size=path.stat().st_blocks * 512,
                    backing_name=Path(backing).name if backing else "",
                    file_size=path.stat().st_size,
                )
            )
        # the root disk first, then the others by name
        disks.sort(key=lambda d: (d.name != ROOT_DISK, d.name))
        return disks

    async def finish_migration(self, spec: InstanceSpec, power_on: bool) -> None:
        d = self._dir(spec.uuid)
        if not (d / ROOT_DISK).is_file():
            raise DriverError(f"{d / ROOT_DISK} has not arrived")
        if await self.power_state(spec.uuid) != PowerState.RUNNING:
            await self._rebase_disks(spec, d)  # a running guest holds the disk lock
        await asyncio.to_thread(self._define_and_start, spec, power_on)

    async def finish_revert_migration(self, spec: InstanceSpec, power_on: bool) -> None:
        d = self._dir(spec.uuid)
        if not (d / ROOT_DISK).is_file():
            raise DriverError(f"{d / ROOT_DISK} is missing: the revert did not restore it")
        await asyncio.to_thread(self._define_and_start, spec, power_on)

    async def console_output(self, uuid: str) -> str:
        def read() -> str:
            for d in (self._dir(uuid), self.instances_path / f"{uuid}{RESIZE_SUFFIX}"):
                log = d / CONSOLE_LOG
                with contextlib.suppress(FileNotFoundError):
                    return log.read_bytes().decode(errors="replace")
            return ""

        return await asyncio.to_thread(read)

    async def resources(self) -> HostResources:
        def collect() -> HostResources:
            conn = self._connection()
            with _libvirt_errors("reading host info"):
                info = conn.getInfo()  # [arch, memory MiB, cpus, MHz, nodes, sockets, ...]
                version, model = self._static or self._read_static(conn)
            memory_mb = int(info[1])
            # getInfo counts NUMA-node memory only; hot-plugged RAM shows in the
            # node memory stats (e.g. 12 GiB vs 24 GiB on some cloud VMs).
            with contextlib.suppress(libvirt.libvirtError, KeyError, TypeError):
                stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
                memory_mb = max(memory_mb, int(stats["total"]) // 1024)
            st = os.statvfs(self.instances_path)
            return HostResources(
                vcpus=int(info[2]),
                memory_mb=memory_mb,
                disk_gb=st.f_blocks * st.f_frsize // GiB,
                hypervisor_type=self.hypervisor_type,
                hypervisor_version=version,
                cpu_model=model,
            )

        return await asyncio.to_thread(collect)

    def _read_static(self, conn: Any) -> tuple[int, str]:
        version = int(conn.getVersion())  # QEMU's, e.g. 7002022 (as Nova reports)
        model = ""
        with contextlib.suppress(ET.ParseError):
            model = ET.fromstring(conn.getCapabilities()).findtext("./host/cpu/model") or ""
        with self._conn_lock:
            if self._conn is conn:
                self._static = (version, model)
        return version, model

    async def list_instances(self) -> list[str]:
        def collect() -> list[str]:
            conn = self._connection()
            with _libvirt_errors("listing domains"):
                domains = conn.listAllDomains(0)
            found = set()
            for dom in domains:
                uuid = self._owned_instance(dom)
                if uuid:
                    found.add(uuid)
            return sorted(found)

        return await asyncio.to_thread(collect)

    def _owned_instance(self, dom: Any) -> str | None:
        """The instance uuid when `dom` is this host's Ferry domain, else None."""
        try:
            name = dom.name()
            if not name.startswith(NAME_PREFIX):
                return None
            try:
                md = parse_ferry_metadata(
                    dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
                )
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    raise
                md = None
        except libvirt.libvirtError:
            return None  # vanished while we looked
        if md is not None:
            return md.instance_uuid if md.host == self.host else None
        # No metadata (defined by hand?): trust the name when it is exactly ours.
        rest = name.removeprefix(f"{NAME_PREFIX}{self.host}-")
        if rest != name and self._name(rest) == name and _looks_like_uuid(rest):
            return rest
        return None


def _looks_like_uuid(value: str) -> bool:
    import uuid as uuidlib

    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True
