"""The virt driver interface: what a compute host needs from a hypervisor.

A driver owns the hypervisor side of an instance (the domain, its power state,
its disk files inside the instance directory it is given). It never talks to
the database or the bus: the compute manager calls it and reports results.

To add a driver: subclass `VirtDriver`, implement every abstract method with
the same semantics as `ferry.compute.virt.fake.FakeDriver` (the reference
behaviour the functional tests pin down), and register it in
`ferry.compute.virt.loader.DRIVERS`.

Instance directories (see `ferry.compute.instance_store`):
  <instances>/<uuid>/disk         qcow2 overlay, backing file "../_base/<name>"
  <instances>/<uuid>/console.log  serial console
  <instances>/<uuid>_resize/      the source copy kept during a migration
  <instances>/_base/<name>        per-host base image cache (raw or qcow2)
The backing file is stored relative ("../_base/<name>") so a disk stays valid
when its directory is renamed to "_resize" and when it lands on another host.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from pathlib import Path


class PowerState(enum.IntEnum):
    """Nova's power_state values (nova/compute/power_state.py)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


@dataclass(frozen=True)
class InstanceSpec:
    """What a driver needs to build or rebuild a guest."""

    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    image_id: str
    # File name of the base image inside <instances>/_base ("" = no backing file).
    base_name: str = ""
    base_format: str = "raw"
    ports: tuple[dict[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DiskInfo:
    """One local disk file of an instance, as Nova's disk_info describes it."""

    name: str  # file name inside the instance directory, e.g. "disk"
    format: str  # "qcow2" | "raw"
    virtual_size: int  # bytes the guest sees
    disk_size: int  # bytes allocated on the host
    backing_name: str = ""  # base image file name inside _base, "" if none
    file_size: int = 0  # length of the file itself (what the data plane moves)


@dataclass(frozen=True)
class HostResources:
    vcpus: int
    memory_mb: int
    disk_gb: int
    hypervisor_type: str
    hypervisor_version: int
    cpu_model: str = ""


class DriverError(Exception):
    """A hypervisor operation failed; the message is shown to operators."""


class InstanceNotFound(DriverError):
    pass


class VirtDriver(abc.ABC):
    """A hypervisor behind one compute host.

    Every method is async; a driver whose library blocks runs it in a thread.
    Every method is idempotent: calling it again after a crash in the middle
    must converge (a restarted conductor re-sends steps).
    """

    #: name shown as hypervisor_type in os-hypervisors
    hypervisor_type: str = "fake"

    def __init__(self, host: str, instances_path: Path) -> None:
        self.host = host
        self.instances_path = instances_path

    @abc.abstractmethod
    async def init_host(self) -> None:
        """Connect to the hypervisor, create directories, pick the accelerator."""

    @abc.abstractmethod
    async def cleanup_host(self) -> None:
        """Release connections at shutdown (guests keep running)."""

    @abc.abstractmethod
    async def spawn(self, spec: InstanceSpec) -> None:
        """Create <uuid>/disk over _base/<spec.base_name>, define the guest, start it."""

    @abc.abstractmethod
    async def power_off(self, uuid: str, timeout: float, retry_interval: float) -> None:
        """Clean shutdown: ACPI, re-sent every retry_interval, forced after timeout."""

    @abc.abstractmethod
    async def power_on(self, uuid: str) -> None:
        """Start a defined, stopped guest; no-op when it already runs."""

    @abc.abstractmethod
    async def power_state(self, uuid: str) -> PowerState:
        """Current power state; NOSTATE when the guest is not defined here."""

    @abc.abstractmethod
    async def destroy(self, uuid: str) -> None:
        """Stop (hard) and undefine the guest. Leaves files alone. No-op if absent."""

    @abc.abstractmethod
    async def disk_info(self, uuid: str, directory: Path) -> list[DiskInfo]:
        """The local disks of the instance whose files are in `directory`."""

    @abc.abstractmethod
    async def finish_migration(self, spec: InstanceSpec, power_on: bool) -> None:
        """Disks are already in <instances>/<uuid>: point each overlay at the local
        _base copy, define the guest here and start it when power_on."""

    @abc.abstractmethod
    async def finish_revert_migration(self, spec: InstanceSpec, power_on: bool) -> None:
        """<instances>/<uuid> was restored from _resize: (re)define and start."""

    @abc.abstractmethod
    async def console_output(self, uuid: str) -> str:
        """Everything the guest wrote to its serial console (may be empty)."""

    @abc.abstractmethod
    async def resources(self) -> HostResources:
        """Total capacity of this host (inventory for the scheduler)."""

    @abc.abstractmethod
    async def list_instances(self) -> list[str]:
        """UUIDs of the guests defined on this host."""
