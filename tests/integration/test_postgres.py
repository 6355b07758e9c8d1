"""The compare-and-swap paths on PostgreSQL, where transactions really run in
parallel (SQLite serialises them): placement claims and state transitions.
Also the scheduler's set-based reads and the heartbeat's one-UPDATE path: the
same statements as on SQLite must give the same answers (SUM returns a bigint
there, floats are compared for the inventory match)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.bus.memory import MemoryBus
from ferry.conductor.manager import ConductorEndpoint
from ferry.conductor.states import Event, State
from ferry.conductor.transitions import ConcurrentUpdate, advance
from ferry.conf import Settings
from ferry.db.models import Flavor, Instance, Migration, ResourceProvider, Service
from ferry.db.session import make_engine, make_sessionmaker
from ferry.scheduler import placement
from ferry.scheduler.hostcache import HostStateCache
from ferry.scheduler.hoststate import HostState, RequestSpec
from ferry.scheduler.placement import InventoryRecord
from ferry.scheduler.scheduler import NoValidHost, host_states, select_destinations
from tests.support.postgres import create_database, drop_database
from tests.unit.test_heartbeat import statements

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Sessions]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_concurrent_claims_never_overcommit_on_postgres(pg: Sessions) -> None:
    host = f"h-{uuid.uuid4().hex[:6]}"
    async with pg() as s, s.begin():
        await placement.ensure_provider(s, host, {
            "VCPU": InventoryRecord(5, 0, 1.0), "MEMORY_MB": InventoryRecord(5 * 512),
            "DISK_GB": InventoryRecord(50)})

    async def one() -> bool:
        try:
            async with pg() as s, s.begin():
                await placement.claim(s, str(uuid.uuid4()), host,
                                      {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10})
            return True
        except placement.ClaimFailed:
            return False

    results = await asyncio.gather(*[one() for _ in range(20)])
    assert sum(results) == 5
    async with pg() as s:
        assert (await placement.usages(s))[host] == {"VCPU": 5, "MEMORY_MB": 2560,
                                                     "DISK_GB": 50}


async def test_two_conductors_caches_racing_never_overcommit_on_postgres(pg: Sessions) -> None:
    """Two conductors, each with its own host-state cache, schedule 16 servers at
    once onto 3 hosts with room for 12 (READ COMMITTED, real concurrency): exactly
    12 are placed, no host is over capacity, and each cache still equals a full read."""
    tag = uuid.uuid4().hex[:6]
    hosts = [f"r{i}-{tag}" for i in range(3)]
    cond = ConductorEndpoint.create(pg, MemoryBus(), Settings(), name="c-race")
    for host in hosts:
        await cond.report_state(host=host, zone=f"az-{tag}", vcpus=4, memory_mb=4 * 512 + 512,
                                disk_gb=100, hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    caches = [HostStateCache(), HostStateCache()]
    small = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}

    async def place(i: int) -> str | None:
        spec = RequestSpec(f"vm{i}-{tag}", "p", "u", dict(small), availability_zone=f"az-{tag}")
        try:
            async with pg() as s, s.begin():
                return (await select_destinations(s, spec, down_after=60,
                                                  cache=caches[i % 2])).host
        except NoValidHost:
            return None

    placed = [h for h in await asyncio.gather(*(place(i) for i in range(16))) if h]
    assert len(placed) == 12 and {placed.count(h) for h in hosts} == {4}
    async with pg() as s:
        full = {h.host: h.used for h in await host_states(s, down_after=60) if h.host in hosts}
        for cache in caches:
            seen = {h.host: h.used for h in await cache.host_states(s, 60) if h.host in hosts}
            assert seen == full
    assert all(u == {"VCPU": 4, "MEMORY_MB": 2048, "DISK_GB": 4} for u in full.values())


async def test_a_host_being_claimed_is_passed_over_not_waited_for_on_postgres(
        pg: Sessions) -> None:
    """While one request's transaction holds a claim on the best host, another
    request takes the next host at once instead of queueing behind it; with no
    other host, it waits for that transaction and then claims there."""
    tag = uuid.uuid4().hex[:6]
    zone, big, small = f"az-{tag}", f"big-{tag}", f"small-{tag}"
    cond = ConductorEndpoint.create(pg, MemoryBus(), Settings(), name="c-busy")
    for host, ram in ((big, 8192), (small, 4096)):
        await cond.report_state(host=host, zone=zone, vcpus=8, memory_mb=ram, disk_gb=100,
                                hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    vm = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}

    def spec(name: str, host: str | None = None) -> RequestSpec:
        return RequestSpec(f"{name}-{tag}", "p", "u", dict(vm), availability_zone=zone,
                           requested_host=host)

    async def place(sp: RequestSpec) -> tuple[str, float]:
        t = time.monotonic()
        async with pg() as s, s.begin():
            sel = await select_destinations(s, sp, down_after=60, cache=HostStateCache())
        return sel.host, time.monotonic() - t

    async with pg() as holder:
        tx = await holder.begin()
        await placement.claim(holder, f"first-{tag}", big, vm)  # uncommitted: holds big
        # Were it to wait for the holder, it would wait forever (the holder commits
        # below): bounded, so that such a regression fails instead of hanging.
        host, took = await asyncio.wait_for(place(spec("second")), 10)
        assert host == small and took < 1.0, (host, took)
        later = asyncio.create_task(place(spec("third", host=big)))
        await asyncio.sleep(0.5)
        assert not later.done()  # only big will do: it waits for the holder
        await tx.commit()
    host, took = await later
    assert host == big and took >= 0.5
    async with pg() as s:
        assert (await placement.usages(s))[big]["MEMORY_MB"] == 1024


async def test_an_inventory_change_never_reuses_a_claims_generation_on_postgres(
        pg: Sessions) -> None:
    """A host's inventory changes in a transaction that read its provider before
    another request's claim committed there. Its generation must move past the
    claim's, or a cache that read (claim's generation, old inventory) in between
    would keep the old inventory for good."""
    tag = uuid.uuid4().hex[:6]
    host = f"grow-{tag}"
    cond = ConductorEndpoint.create(pg, MemoryBus(), Settings(), name="c-grow")
    await cond.report_state(host=host, zone=f"az-{tag}", vcpus=8, memory_mb=4096,
                            disk_gb=100, hypervisor_type="fake", hypervisor_version=1,
                            data_address="127.0.0.1:1")
    cache = HostStateCache()

    async def seen() -> HostState:
        async with pg() as s:
            return next(h for h in await cache.host_states(s, 60) if h.host == host)

    async with pg() as grow:
        tx = await grow.begin()
        # Held, so the session keeps this (soon outdated) row as its provider.
        held = (await grow.execute(select(ResourceProvider).where(
            ResourceProvider.name == host))).scalar_one()
        before = held.generation
        async with pg() as s, s.begin():
            await placement.claim(s, f"vm-{tag}", host, {"MEMORY_MB": 512})
        assert (await seen()).used == {"MEMORY_MB": 512}  # cached: claim's generation
        await placement.ensure_provider(grow, host, {
            "VCPU": InventoryRecord(8), "MEMORY_MB": InventoryRecord(8192),
            "DISK_GB": InventoryRecord(100)})
        await tx.commit()
        assert held.name == host
    assert (await seen()).inventory["MEMORY_MB"].total == 8192
    async with pg() as s:
        now = (await s.execute(select(ResourceProvider.generation).where(
            ResourceProvider.name == host))).scalar_one()
    assert now == before + 2  # the claim's bump and the inventory's


async def test_a_claim_committed_during_a_delete_still_moves_the_generation_on_postgres(
        pg: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    """delete_allocations reads what a consumer holds, bumps those providers and
    deletes. A claim for the same consumer that commits in between puts rows on
    another provider; deleting them changes its usage, so its generation must
    move too, or a host-state cache would keep counting them."""
    tag = uuid.uuid4().hex[:6]
    first, second, vm = f"d1-{tag}", f"d2-{tag}", f"vm-{tag}"
    cond = ConductorEndpoint.create(pg, MemoryBus(), Settings(), name="c-del")
    for host in (first, second):
        await cond.report_state(host=host, zone=f"az-{tag}", vcpus=8, memory_mb=4096,
                                disk_gb=100, hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    async with pg() as s, s.begin():
        await placement.claim(s, vm, first, {"MEMORY_MB": 512})
    read = placement.allocations_for

    async def racing(session: AsyncSession, consumer: str) -> dict[str, dict[str, int]]:
        held = await read(session, consumer)
        async with pg() as other, other.begin():
            await placement.claim(other, consumer, second, {"MEMORY_MB": 256})
        return held

    async def generation() -> int:
        async with pg() as s:
            return int((await s.execute(select(ResourceProvider.generation).where(
                ResourceProvider.name == second))).scalar_one())

    monkeypatch.setattr(placement, "allocations_for", racing)
    before = await generation()
    async with pg() as s, s.begin():
        await placement.delete_allocations(s, vm)
    monkeypatch.undo()
    async with pg() as s:
        assert second not in await placement.usages(s)
    assert await generation() == before + 2  # the racing claim's bump, and the delete's


async def test_concurrent_advance_has_one_winner_on_postgres(pg: Sessions) -> None:
    inst_uuid, mig_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    async with pg() as s, s.begin():
        f = Flavor(flavorid=uuid.uuid4().hex[:8], name=uuid.uuid4().hex, vcpus=1,
                   memory_mb=128, root_gb=1, extra_specs={})
        s.add(f)
        await s.flush()
        s.add(Instance(uuid=inst_uuid, display_name="vm", project_id="p", user_id="u",
                       vm_state="resized", task_state=None, flavor_id=f.id, image_ref="i"))
        s.add(Migration(uuid=mig_uuid, instance_uuid=inst_uuid, state=State.VERIFY.value,
                        status="finished", phase="verify", old_vm_state="active", steps=[]))

    async def decide(event: Event) -> str:
        try:
            await advance(pg, mig_uuid, event, expect=State.VERIFY)
            return event.value
        except ConcurrentUpdate:
            return "lost"

    results = await asyncio.gather(*[decide(e) for e in [Event.CONFIRM, Event.REVERT] * 4])
    winners = [r for r in results if r != "lost"]
    assert len(winners) == 1, results
    async with pg() as s:
        mig = await s.get(Migration, (await s.execute(
            Migration.__table__.select().where(Migration.uuid == mig_uuid))).one().id)
        assert mig is not None and len(mig.steps) == 1


async def test_usage_sums_and_heartbeats_on_postgres(pg: Sessions) -> None:
    cond = ConductorEndpoint.create(pg, MemoryBus(), Settings(), name="c-pg")
    tag = uuid.uuid4().hex[:6]
    busy, idle = f"busy-{tag}", f"idle-{tag}"
    for host in (busy, idle):
        await cond.report_state(host=host, zone="nova", vcpus=8, memory_mb=8192, disk_gb=100,
                                hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    for i in range(3):
        async with pg() as s, s.begin():
            await placement.claim(s, f"vm{i}-{tag}", busy,
                                  {"VCPU": i + 1, "MEMORY_MB": 1024, "DISK_GB": 10})
    async with pg() as s:
        used = await placement.usages(s)
        states = {h.host: h for h in await host_states(s, down_after=60)}
        rp_id = (await s.execute(select(ResourceProvider.id)
                                 .where(ResourceProvider.name == busy))).scalar_one()
        one = await placement.provider_usage(s, rp_id)
    assert used[busy] == one == {"VCPU": 6, "MEMORY_MB": 3072, "DISK_GB": 30}
    assert all(type(v) is int for v in one.values())
    assert idle not in used
    assert states[busy].free("MEMORY_MB") == 8192 - 512 - 3072
    assert states[idle].used == {} and states[idle].up and states[idle].enabled

    # An unchanged heartbeat matches the stored inventory (ratio 4.0 as a double).
    with statements(pg) as sql:
        await cond.report_state(host=idle, zone="nova", vcpus=8, memory_mb=8192,
                                disk_gb=100, hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    assert [q for q in sql if q not in ("BEGIN", "COMMIT")] == ["UPDATE"]
    async with pg() as s:
        assert (await s.execute(select(Service.last_seen_up)
                                .where(Service.host == idle))).scalar_one() is not None
