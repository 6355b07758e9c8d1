"""FakeDriver: a stateful hypervisor that needs no QEMU.

It behaves like the libvirt driver where the rest of Ferry can notice: it
writes a real sparse disk file in the instance directory (so the data plane
moves real bytes), keeps a boot counter inside that disk (so a test can tell
which copy booted), writes the real guest's console marker on every boot, and
honours power-off timeouts. Tests inject failures through `FakeFaults`.
Used by the functional tests and by large simulated clusters.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ferry.compute.virt.driver import (
    DiskInfo,
    DriverError,
    HostResources,
    InstanceNotFound,
    InstanceSpec,
    PowerState,
    VirtDriver,
)

HEADER_SIZE = 4096
COUNTER_OFFSET = 4096
# Scattered data so a disk has holes between allocated extents, like a guest's.
DATA_OFFSETS = (1 << 20, 64 << 20, 300 << 20)
DATA_BLOCK = 64 * 1024


@dataclass
class FakeFaults:
    """Failures to inject: method name -> message, fired once each."""

    fail_once: dict[str, str] = field(default_factory=dict)
    ignore_acpi: bool = False

    def check(self, method: str) -> None:
        msg = self.fail_once.pop(method, None)
        if msg is not None:
            raise DriverError(f"injected failure in {method}: {msg}")


@dataclass
class _Guest:
    spec: InstanceSpec
    state: PowerState = PowerState.SHUTDOWN


class FakeDriver(VirtDriver):
    hypervisor_type = "fake"

    def __init__(self, host: str, instances_path: Path, *, vcpus: int = 8,
                 memory_mb: int = 16384, disk_gb: int = 200) -> None:
        super().__init__(host, instances_path)
        self._guests: dict[str, _Guest] = {}
        self.faults = FakeFaults()
        self._capacity = HostResources(vcpus, memory_mb, disk_gb, "fake", 1000)

    async def init_host(self) -> None:
        (self.instances_path / "_base").mkdir(parents=True, exist_ok=True)
        # A restarted process finds its guests again from their directories,
        # as libvirt keeps persistent domains across a compute restart.
        for d in self.instances_path.iterdir():
            meta = d / "fake-domain.json"
            if d.is_dir() and meta.exists():
                info = json.loads(meta.read_text())
                if info.get("host") == self.host:
                    spec = InstanceSpec(**{**info["spec"], "ports": ()})
                    self._guests[spec.uuid] = _Guest(spec, PowerState(info["state"]))

    async def cleanup_host(self) -> None:
        return None

    def _dir(self, uuid: str) -> Path:
        return self.instances_path / uuid

    def _save(self, g: _Guest) -> None:
        d = self._dir(g.spec.uuid)
        if d.exists():
            spec = {k: v for k, v in g.spec.__dict__.items() if k != "ports"}
            (d / "fake-domain.json").write_text(
                json.dumps({"host": self.host, "spec": spec, "state": int(g.state)}))

    def _boot(self, g: _Guest) -> None:
        disk = self._dir(g.spec.uuid) / "disk"
        if not disk.exists():
            raise DriverError(f"disk {disk} is missing")
        with open(disk, "r+b") as f:
            f.seek(COUNTER_OFFSET)
            raw = f.read(8)
            boot = (struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0) + 1
            f.seek(COUNTER_OFFSET)
            f.write(struct.pack("<Q", boot))
            f.seek(DATA_OFFSETS[0])
            payload_ok = f.read(DATA_BLOCK) == _payload(g.spec.uuid)
            f.flush()
            os.fsync(f.fileno())
        with open(self._dir(g.spec.uuid) / "console.log", "a") as c:
            c.write(f"GUEST-BOOTED id={g.spec.uuid} boot={boot} "
                    f"payload={'ok' if payload_ok else 'BAD'}\n")
        g.state = PowerState.RUNNING
        self._save(g)

    async def spawn(self, spec: InstanceSpec) -> None:
        self.faults.check("spawn")
        d = self._dir(spec.uuid)
        d.mkdir(parents=True, exist_ok=True)
        disk = d / "disk"
        if not disk.exists():
            with open(disk, "wb") as f:
                header = json.dumps({"backing": f"../_base/{spec.base_name}"}).encode()
                f.write(header.ljust(HEADER_SIZE, b"\0"))
                for off in DATA_OFFSETS:
                    f.seek(off)
                    f.write(_payload(spec.uuid))
                f.truncate(max(spec.root_gb, 1) << 30)
        g = self._guests.setdefault(spec.uuid, _Guest(spec))
        self._boot(g)

    def _get(self, uuid: str) -> _Guest:
        g = self._guests.get(uuid)
        if g is None:
            raise InstanceNotFound(f"instance {uuid} is not defined on {self.host}")
        return g

    async def power_off(self, uuid: str, timeout: float, retry_interval: float) -> None:
        self.faults.check("power_off")
        g = self._guests.get(uuid)
        if g is None or g.state == PowerState.SHUTDOWN:
            return
        if self.faults.ignore_acpi:
            await asyncio.sleep(timeout)  # the guest ignored every ACPI request
        g.state = PowerState.SHUTDOWN
        self._save(g)

    async def power_on(self, uuid: str) -> None:
        self.faults.check("power_on")
        g = self._get(uuid)
        if g.state != PowerState.RUNNING:
            self._boot(g)

    async def power_state(self, uuid: str) -> PowerState:
        g = self._guests.get(uuid)
        return g.state if g else PowerState.NOSTATE

    async def destroy(self, uuid: str) -> None:
        self.faults.check("destroy")
        self._guests.pop(uuid, None)
        for d in (self._dir(uuid), self.instances_path / f"{uuid}_resize"):
            meta = d / "fake-domain.json"
            if meta.exists() and json.loads(meta.read_text()).get("host") == self.host:
                meta.unlink()

    async def disk_info(self, uuid: str, directory: Path) -> list[DiskInfo]:
        disk = directory / "disk"
        if not disk.exists():
            raise DriverError(f"{disk} does not exist")
        st = disk.stat()
        with open(disk, "rb") as f:
            header = json.loads(f.read(HEADER_SIZE).rstrip(b"\0") or b"{}")
        backing = Path(header.get("backing", "")).name
        return [DiskInfo("disk", "qcow2", st.st_size, st.st_blocks * 512, backing,
                         file_size=st.st_size)]

    async def finish_migration(self, spec: InstanceSpec, power_on: bool) -> None:
        self.faults.check("finish_migration")
        g = _Guest(spec)
        self._guests[spec.uuid] = g
        self._save(g)
        if power_on:
            self._boot(g)

    async def finish_revert_migration(self, spec: InstanceSpec, power_on: bool) -> None:
        self.faults.check("finish_revert_migration")
        g = self._guests.setdefault(spec.uuid, _Guest(spec))
        self._save(g)
        if power_on and g.state != PowerState.RUNNING:
            self._boot(g)

    async def console_output(self, uuid: str) -> str:
        for d in (self._dir(uuid), self.instances_path / f"{uuid}_resize"):
            log = d / "console.log"
            if log.exists():
                return log.read_text()
        return ""

    async def resources(self) -> HostResources:
        return self._capacity

    async def list_instances(self) -> list[str]:
        return sorted(self._guests)


def _payload(uuid: str) -> bytes:
    seed = uuid.encode()
    return (seed * (DATA_BLOCK // len(seed) + 1))[:DATA_BLOCK]
