"""ConductorEndpoint: serves the `conductor` topic and runs the periodic jobs.

At start it looks at every unfinished migration and does what
`ferry.conductor.states.ON_RESTART` says. RPC methods are declared in
`ferry.bus.catalogue`; add one there and here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
import uuid as uuidlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select

from ferry.bus.base import Bus, endpoint_handler
from ferry.bus.catalogue import CONDUCTOR_TOPIC
from ferry.conductor import servers, steps
from ferry.conductor.context import StepContext
from ferry.conductor.lease import Leases
from ferry.conductor.runner import MigrationRunner
from ferry.conductor.states import Event, State
from ferry.conductor.transitions import ConcurrentUpdate, advance
from ferry.conf import Settings
from ferry.db.models import Migration, Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.placement import InventoryRecord

log = logging.getLogger(__name__)


class ConductorEndpoint:
    def __init__(self, ctx: StepContext, name: str | None = None) -> None:
        self.ctx = ctx
        # Stable per host by default, so a restarted conductor takes its own
        # leases back at once; several conductors need distinct names.
        self.name = name or f"conductor@{socket.gethostname()}"
        self.leases = Leases(ctx.sessions, self.name, ctx.settings.conductor_lease_seconds)
        self.runner = MigrationRunner(ctx, self.leases)
        self._last_renew = 0.0
        self._tag: str | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    @classmethod
    def create(cls, sessions: Any, bus: Bus, settings: Settings,
               name: str | None = None) -> ConductorEndpoint:
        return cls(StepContext(sessions, bus, settings), name)

    async def start(self) -> None:
        self._tag = await self.ctx.bus.serve(CONDUCTOR_TOPIC,
                                             endpoint_handler(self, "conductor"))
        await self.recover()
        self._periodic = asyncio.create_task(self._periodic_loop())

    async def stop(self, release: bool = True) -> None:
        """Stop serving. `release=False` keeps the leases, as a crash would, so
        another conductor takes over only once they expire."""
        if self._periodic:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        await self.ctx.bus.unserve(CONDUCTOR_TOPIC, self._tag)
        await self.runner.stop(release=release)
        for t in list(self._jobs):
            t.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def wait_idle(self) -> None:
        """For tests and `ferry up` shutdown: let running work settle."""
        while self._jobs or any(not t.done() for t in self.runner._tasks.values()):
            await asyncio.gather(*self._jobs, return_exceptions=True)
            await self.runner.wait_idle()

    async def recover(self) -> None:
        """Take over every unfinished migration no live conductor drives."""
        for mig_uuid, state in await self.leases.orphans():
            if mig_uuid in self.runner.running():
                continue
            log.info("%s takes over migration %s in %s", self.name, mig_uuid, state)
            self.runner.recover(mig_uuid, State(state))

    async def renew_leases(self) -> set[str]:
        """Renew the leases this conductor drives under; cancel the migrations
        another conductor took over. Returns those (for tests and logs)."""
        taken = await self.leases.renew(self.runner.holding())
        # Count only what this runner still drives after the renewal: a
        # migration that finished meanwhile left `holding()` before it released
        # its lease (the runner's order), so it is not lost even if another
        # conductor already drives its next step (a confirm) under a new lease.
        # One still driven here whose row names someone else (or nobody: taken
        # after expiry and released again) really was taken over.
        lost = taken & set(self.runner.holding())
        for mig_uuid in sorted(lost):
            log.warning("%s lost the lease on migration %s", self.name, mig_uuid)
            self.runner.cancel(mig_uuid)
        return lost

    # -- RPC: migrations -----------------------------------------------------------

    async def migrate_server(self, migration_uuid: str) -> None:
        self.runner.start(migration_uuid)

    async def confirm_migration_request(self, migration_uuid: str) -> None:
        self.runner.start(migration_uuid)

    async def revert_migration_request(self, migration_uuid: str) -> None:
        self.runner.start(migration_uuid)

    async def report_progress(self, migration_uuid: str, done: int, total: int,
                              rate: float | None = None, eta: float | None = None,
                              files: dict[str, Any] | None = None) -> None:
        await steps.progress(self.ctx, migration_uuid, done, total, rate, eta, files)

    # -- RPC: servers ---------------------------------------------------------------

    async def build_server(self, instance_uuid: str) -> None:
        self._spawn(servers.build(self.ctx, instance_uuid))

    async def delete_server(self, instance_uuid: str) -> None:
        self._spawn(servers.delete(self.ctx, instance_uuid))

    async def stop_server(self, instance_uuid: str) -> None:
        self._spawn(servers.stop(self.ctx, instance_uuid))

    async def start_server(self, instance_uuid: str) -> None:
        self._spawn(servers.start(self.ctx, instance_uuid))

    # -- RPC: hosts -------------------------------------------------------------------

    async def report_state(self, host: str, zone: str, vcpus: int, memory_mb: int,
                           disk_gb: int, hypervisor_type: str, hypervisor_version: int,
                           data_address: str) -> None:
        st = self.ctx.settings
        reserved = st.reserved_host_memory_mb if memory_mb > 2 * st.reserved_host_memory_mb \
            else 0
        inventory = {
            "VCPU": InventoryRecord(vcpus, 0, st.cpu_allocation_ratio),
            "MEMORY_MB": InventoryRecord(memory_mb, reserved, st.ram_allocation_ratio),
            "DISK_GB": InventoryRecord(disk_gb, 0, st.disk_allocation_ratio),
        }
        async with self.ctx.sessions() as s, s.begin():
            # Nearly every heartbeat changes nothing but the time (1,000 hosts are
            # ~100 a second): one UPDATE ... WHERE everything else still matches.
            # Only a new host, or a changed address or inventory, takes the slow
            # path below, which also bumps the provider's generation.
            touched = await s.execute(
                sa.update(Service)
                .where(Service.host == host, Service.binary == "ferry-compute",
                       Service.data_address == data_address,
                       Service.hypervisor_type == hypervisor_type,
                       Service.hypervisor_version == hypervisor_version,
                       placement.inventory_is(host, inventory))
                .values(last_seen_up=utcnow())
                .execution_options(synchronize_session=False))
            if touched.rowcount == 1:  # type: ignore[attr-defined]
                return
            svc = (await s.execute(select(Service).where(
                Service.host == host, Service.binary == "ferry-compute"))).scalar_one_or_none()
            if svc is None:
                svc = Service(uuid=str(uuidlib.uuid4()), host=host, binary="ferry-compute",
                              topic="compute", zone=zone)
                s.add(svc)
            svc.last_seen_up = utcnow()
            svc.data_address = data_address
            svc.hypervisor_type = hypervisor_type
            svc.hypervisor_version = hypervisor_version
            await placement.ensure_provider(s, host, inventory)

    # -- periodic ------------------------------------------------------------------------

    async def _periodic_loop(self) -> None:
        st = self.ctx.settings
        while True:
            await asyncio.sleep(st.periodic_interval)
            try:
                now = time.monotonic()
                if now - self._last_renew >= st.lease_renew_interval:
                    self._last_renew = now
                    await self.renew_leases()
                    await self.recover()
                await self.auto_confirm()
            except Exception:
                log.exception("periodic job failed")

    async def auto_confirm(self) -> None:
        """Nova's _poll_unconfirmed_resizes: confirm after resize_confirm_window."""
        window = self.ctx.settings.resize_confirm_window
        if window <= 0:
            return
        cutoff = utcnow() - dt.timedelta(seconds=window)
        async with self.ctx.sessions() as s:
            due = (await s.execute(select(Migration.uuid).where(
                Migration.state == State.VERIFY.value, Migration.updated_at <= cutoff))
            ).scalars().all()
        for mig_uuid in due:
            try:
                await advance(self.ctx.sessions, mig_uuid, Event.CONFIRM, expect=State.VERIFY,
                              note=f"auto-confirmed after {window:.0f}s")
            except ConcurrentUpdate:
                continue
            self.runner.start(mig_uuid)
