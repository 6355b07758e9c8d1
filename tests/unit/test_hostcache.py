"""The scheduler's host-state cache (`ferry.scheduler.hostcache`): between
decisions it re-reads only the providers whose generation moved, and what it
keeps always equals what a full read of the database would give."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.models import Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.hostcache import HostStateCache
from ferry.scheduler.hoststate import HostState, RequestSpec
from ferry.scheduler.scheduler import host_states, select_destinations
from tests.support.placement import add_compute, inventory

Sessions = async_sessionmaker[AsyncSession]

VM = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10}


def _view(states: list[HostState]) -> dict[str, tuple[object, ...]]:
    return {h.host: (h.enabled, h.up, h.zone, h.inventory, h.used) for h in states}


async def _states(sessions: Sessions, cache: HostStateCache) -> dict[str, tuple[object, ...]]:
    """What the cache says, checked against a full read in the same breath."""
    async with sessions() as s:
        cached = _view(await cache.host_states(s, down_after=60))
        assert cached == _view(await host_states(s, down_after=60))
    return cached


async def _claim(sessions: Sessions, consumer: str, host: str, ram: int) -> None:
    async with sessions() as s, s.begin():
        await placement.claim(s, consumer, host, {"MEMORY_MB": ram})


async def test_only_providers_whose_generation_moved_are_read_again(sessions: Sessions) -> None:
    for name in ("h1", "h2", "h3"):
        await add_compute(sessions, name)
    cache = HostStateCache()
    await _states(sessions, cache)
    assert cache.reads == 3
    assert (await _states(sessions, cache))["h2"][4] == {}
    assert cache.reads == 3  # nothing changed: nothing read

    await _claim(sessions, "vm-a", "h2", 1000)
    assert (await _states(sessions, cache))["h2"][4] == {"MEMORY_MB": 1000}
    assert cache.reads == 4

    async with sessions() as s, s.begin():
        await placement.delete_allocations(s, "vm-a")
    assert (await _states(sessions, cache))["h2"][4] == {}
    async with sessions() as s, s.begin():  # a host grew: its inventory is read again
        await placement.ensure_provider(s, "h3", inventory(ram=8192))
    assert (await _states(sessions, cache))["h3"][3] == inventory(ram=8192)
    assert cache.reads == 6

    async with sessions() as s, s.begin():  # a host removed, another added: same count
        await s.execute(delete(Service).where(Service.host == "h1"))
    await add_compute(sessions, "h4")
    assert set(await _states(sessions, cache)) == {"h2", "h3", "h4"}
    assert len(cache._entries) == 3  # h1's entry is gone


async def test_liveness_and_flags_are_read_on_every_decision(sessions: Sessions) -> None:
    """Heartbeats, disable and force-down do not touch placement: they must show
    at once all the same, without re-reading anybody's usage."""
    await add_compute(sessions, "h1", used_ram=100)
    await add_compute(sessions, "h2")
    cache = HostStateCache()
    assert (await _states(sessions, cache))["h1"][:2] == (True, True)
    async with sessions() as s, s.begin():
        await s.execute(update(Service).where(Service.host == "h1").values(
            last_seen_up=utcnow() - dt.timedelta(seconds=300)))
        await s.execute(update(Service).where(Service.host == "h2").values(disabled=True))
    view = await _states(sessions, cache)
    assert (view["h1"][:2], view["h2"][:2]) == ((True, False), (False, True))
    assert view["h1"][4] == {"MEMORY_MB": 100}
    assert cache.reads == 2


async def test_a_rolled_back_claim_cannot_leave_its_usage_behind(sessions: Sessions) -> None:
    """A transaction reads its own uncommitted claim. If the cache kept that, the
    rollback would restore the old generation and the next commit would reach
    the same number with different usage: the cache would match it and be wrong."""
    await add_compute(sessions, "h1")
    cache = HostStateCache()
    await _states(sessions, cache)
    async with sessions() as s:
        tx = await s.begin()
        await placement.claim(s, "ghost", "h1", {"MEMORY_MB": 3000})
        states = {h.host: h for h in await cache.host_states(s, down_after=60)}
        assert states["h1"].used == {"MEMORY_MB": 3000}  # its own write, seen
        await tx.rollback()
    await _claim(sessions, "real", "h1", 200)  # the same generation number, committed
    assert (await _states(sessions, cache))["h1"][4] == {"MEMORY_MB": 200}


async def test_the_conductors_decisions_use_and_keep_the_cache_true(sessions: Sessions) -> None:
    """Decision after decision with one cache, as the conductor makes them: each
    sees the claims before it (the emptiest host changes), and the cache stays
    equal to a full read."""
    for name, used in (("h1", 0), ("h2", 256), ("h3", 512)):
        await add_compute(sessions, name, used_ram=used)
    cache = HostStateCache()
    chosen = []
    for i in range(6):
        async with sessions() as s, s.begin():
            sel = await select_destinations(
                s, RequestSpec(f"vm{i}", "p", "u", dict(VM)), down_after=60, cache=cache)
        chosen.append(sel.host)
        await _states(sessions, cache)
    # 512 MiB each: h1 leads until it is as full as h3, then they take turns.
    assert chosen == ["h1", "h2", "h3", "h1", "h2", "h3"]
    assert (await _states(sessions, cache))["h1"][4] == {
        "MEMORY_MB": 1024, "VCPU": 2, "DISK_GB": 20}
