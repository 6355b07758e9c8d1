"""One conductor under load: at most `max_migrations_in_flight` migrations run
at once and the rest wait in order; lease renewal counts as lost only the
leases another conductor really took."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ferry.bus.catalogue import compute_topic
from ferry.bus.memory import MemoryBus
from ferry.conductor.lease import Leases
from ferry.conductor.manager import ConductorEndpoint
from ferry.db.models import Migration, utcnow
from tests.support import invariants
from tests.support.cloud import Cloud, start_cloud

CAP = 3


class Sampler:
    """Reads the runner's state every few milliseconds while migrations run."""

    def __init__(self, conductor: ConductorEndpoint) -> None:
        self.conductor = conductor
        self.max_running = 0
        self.max_waiting = 0
        self.max_slots_busy = 0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        runner = self.conductor.runner
        while True:
            self.max_running = max(self.max_running, len(runner.holding()))
            self.max_waiting = max(self.max_waiting, len(runner.waiting()))
            self.max_slots_busy = max(self.max_slots_busy, runner.slots.busy)
            await asyncio.sleep(0.002)

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_migrations_beyond_the_cap_wait_and_all_succeed(tmp_path: Path) -> None:
    ec = await start_cloud(tmp_path / "s", hosts=3, max_migrations_in_flight=CAP)
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
            cloud = Cloud(ec, client)
            image = await cloud.upload_image()
            servers = await asyncio.gather(*[cloud.boot(name=f"vm{i}", image=image)
                                             for i in range(3 * CAP)])
            ids = [s["id"] for s in servers]
            with Sampler(ec.conductor) as sampler:
                results = await asyncio.gather(*[cloud.action(i, {"migrate": None})
                                                  for i in ids])
                assert [r.status_code for r in results] == [202] * len(ids)
                for i in ids:
                    await cloud.wait_status(i, "VERIFY_RESIZE", timeout=60)
                await ec.conductor.wait_idle()
                during_migrate = (sampler.max_running, sampler.max_waiting)
                confirms = await asyncio.gather(*[cloud.action(i, {"confirmResize": None})
                                                  for i in ids])
                assert [r.status_code for r in confirms] == [204] * len(ids)
                for i in ids:
                    await cloud.wait_status(i, "ACTIVE", timeout=60)
                await ec.conductor.wait_idle()
            # Never more than the cap at once, and the cap was reached with
            # others queued behind it (so the limit, not luck, kept it there).
            assert sampler.max_running == CAP, during_migrate
            assert sampler.max_slots_busy == CAP
            assert during_migrate[1] >= 1
            assert ec.conductor.runner.slots.busy == 0
            assert ec.conductor.runner.waiting() == []
            for i in ids:
                [mig] = await cloud.migrations(i)
                assert mig["state"] == "confirmed", mig
                await invariants.check(ec, i)
            await invariants.total_usage_matches(ec)
    finally:
        await ec.stop()


class RenewAfter(Leases):
    """The conductor's leases, with something happening between the moment the
    held list is read and the renewal's transaction: the interleaving under test."""

    def __init__(self, leases: Leases, meanwhile: Callable[[], Awaitable[None]]) -> None:
        super().__init__(leases.sessions, leases.owner, leases.ttl.total_seconds())
        self.meanwhile = meanwhile

    async def renew(self, migration_uuids: list[str]) -> set[str]:
        await self.meanwhile()
        return await super().renew(migration_uuids)


async def test_a_lease_released_during_renewal_is_not_lost(tmp_path: Path) -> None:
    # Periodic renewal off (the test calls it), so only the interleaving runs.
    ec = await start_cloud(tmp_path / "s", hosts=2, lease_renew_interval=3600.0)
    b: ConductorEndpoint | None = None
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
            cloud = Cloud(ec, client)
            a = ec.conductor
            bus = ec.bus
            assert isinstance(bus, MemoryBus)
            server = await cloud.boot()
            sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
            assert (await cloud.action(sid, {"migrate": None})).status_code == 202
            await cloud.wait_status(sid, "VERIFY_RESIZE")
            gate = bus.hold(compute_topic(src), "confirm_migration")
            assert (await cloud.action(sid, {"confirmResize": None})).status_code == 204
            await asyncio.wait_for(gate.reached.wait(), 10)
            [mig] = await cloud.migrations(sid)
            assert a.runner.holding() == [mig["uuid"]]

            async def finish() -> None:
                # The migration finishes and releases its lease after the held
                # list was read, before the renewal's transaction.
                gate.released.set()
                await a.runner.wait_idle()

            a.leases = RenewAfter(a.leases, finish)
            assert await a.renew_leases() == set()
            [mig] = await cloud.migrations(sid)
            assert mig["state"] == "confirmed"

            # A real loss: A drives a migration, its lease lapses and B takes it.
            a.leases = a.runner.leases
            await cloud.wait_status(sid, "ACTIVE")
            dest = (await cloud.server(sid))["OS-EXT-SRV-ATTR:host"]
            gate = bus.hold(compute_topic(dest), "power_off_for_migration")
            assert (await cloud.action(sid, {"migrate": None})).status_code == 202
            await asyncio.wait_for(gate.reached.wait(), 10)
            mig2 = next(m for m in await cloud.migrations(sid) if m["state"] != "confirmed")
            assert a.runner.holding() == [mig2["uuid"]]
            async with ec.sessions() as s, s.begin():
                await s.execute(update(Migration).where(Migration.uuid == mig2["uuid"]).values(
                    lease_expires=utcnow() - dt.timedelta(seconds=1)))
            b = ConductorEndpoint.create(ec.sessions, bus, ec.cfg.settings,
                                         name="conductor-b")
            assert await b.leases.acquire(mig2["uuid"])
            assert await a.renew_leases() == {mig2["uuid"]}
            await a.runner.wait_idle()  # A's task was cancelled
            assert a.runner.holding() == []
            # B drives it from here (rolls it back, as after a takeover); A's
            # power-off, still on its way, is fenced.
            await b.start()
            gate.released.set()
            s2 = await cloud.wait_status(sid, "ACTIVE", timeout=20)
            await b.wait_idle()
            assert s2["OS-EXT-SRV-ATTR:host"] == dest
            mig2 = next(m for m in await cloud.migrations(sid) if m["uuid"] == mig2["uuid"])
            assert mig2["status"] == "error" and "interrupted" in mig2["error"]
            await invariants.check(ec, sid)
            await invariants.total_usage_matches(ec)
    finally:
        if b is not None:
            await b.stop()
        await ec.stop()


class BusyPool:
    """The conductor's sessionmaker, with the next `n` checkouts timing out as
    an exhausted pool does ("QueuePool limit ... reached")."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self.fail = 0
        self.failed = 0

    def __call__(self) -> Any:
        if self.fail > 0:
            self.fail -= 1
            self.failed += 1
            raise PoolTimeout("QueuePool limit of size 10 overflow 20 reached, "
                              "connection timed out, timeout 30.00")
        return self.sessions()


async def test_a_step_that_hits_a_pool_timeout_is_retried_not_rolled_back(
        tmp_path: Path) -> None:
    ec = await start_cloud(tmp_path / "s", hosts=2)
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
            cloud = Cloud(ec, client)
            bus = ec.bus
            assert isinstance(bus, MemoryBus)
            server = await cloud.boot()
            sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
            busy = BusyPool(ec.conductor.ctx.sessions)
            ec.conductor.ctx.sessions = busy
            gate = bus.hold(compute_topic(src), "power_off_for_migration")
            assert (await cloud.action(sid, {"migrate": None})).status_code == 202
            await asyncio.wait_for(gate.reached.wait(), 10)
            # The guest is off; recording that (and the step's retry) finds the
            # pool exhausted twice.
            busy.fail = 2
            gate.released.set()
            s = await cloud.wait_status(sid, "VERIFY_RESIZE")
            assert busy.failed == 2
            assert s["OS-EXT-SRV-ATTR:host"] != src
            [mig] = await cloud.migrations(sid)
            assert mig["error"] is None
            assert "rolling_back" not in [st["state"] for st in mig["steps"]]
            await invariants.check(ec, sid)
            await invariants.total_usage_matches(ec)
    finally:
        await ec.stop()
