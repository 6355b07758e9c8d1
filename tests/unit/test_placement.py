"""Placement arithmetic and claims (`ferry.scheduler.placement`) on a real SQLite
database made by the project's Alembic migrations."""

from __future__ import annotations

import asyncio
import uuid as uuidlib

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.models import Consumer, Inventory, ResourceProvider
from ferry.scheduler import placement
from ferry.scheduler.placement import ClaimFailed, InventoryRecord

Sessions = async_sessionmaker[AsyncSession]

# 8 CPUs at 4.0 = 32 VCPU, 4096 MB with 512 reserved = 3584 MB, 100 GB disk.
HOST = {
    "VCPU": InventoryRecord(8, 0, 4.0),
    "MEMORY_MB": InventoryRecord(4096, 512, 1.0),
    "DISK_GB": InventoryRecord(100, 0, 1.0),
}
SMALL = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10}


async def _provider(sessions: Sessions, name: str,
                    inventory: dict[str, InventoryRecord] | None = None) -> None:
    async with sessions() as s, s.begin():
        await placement.ensure_provider(s, name, inventory or HOST)


async def _usages(sessions: Sessions) -> dict[str, dict[str, int]]:
    async with sessions() as s:
        return await placement.usages(s)


async def _allocs(sessions: Sessions, consumer: str) -> dict[str, dict[str, int]]:
    async with sessions() as s:
        return await placement.allocations_for(s, consumer)


async def _consumers(sessions: Sessions) -> dict[str, tuple[str, str]]:
    async with sessions() as s:
        return {c.uuid: (c.project_id, c.user_id)
                for c in (await s.execute(select(Consumer))).scalars()}


async def _generation(sessions: Sessions, name: str) -> int:
    async with sessions() as s:
        rp = (await s.execute(select(ResourceProvider).where(ResourceProvider.name == name))
              ).scalar_one()
        return rp.generation


async def _claim(sessions: Sessions, consumer: str, provider: str,
                 resources: dict[str, int], **kw: str) -> None:
    async with sessions() as s, s.begin():
        await placement.claim(s, consumer, provider, resources, **kw)


# -- providers and inventories ------------------------------------------------------


def test_capacity_is_total_minus_reserved_times_ratio() -> None:
    assert HOST["VCPU"].capacity == 32
    assert HOST["MEMORY_MB"].capacity == 3584
    assert InventoryRecord(10, 1, 1.5).capacity == 13  # 13.5 rounds down: never overcommit


async def test_ensure_provider_creates_inventories(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        rp = await placement.ensure_provider(s, "host1", HOST)
        assert rp.uuid == str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "host1"))
    async with sessions() as s:
        assert await placement.inventories(s) == {"host1": HOST}
    assert await _generation(sessions, "host1") == 1


async def test_ensure_provider_bumps_generation_only_on_change(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    await _provider(sessions, "host1")  # the same report again
    await _provider(sessions, "host1", dict(HOST))
    assert await _generation(sessions, "host1") == 1

    bigger = {**HOST, "MEMORY_MB": InventoryRecord(8192, 512, 1.0)}
    await _provider(sessions, "host1", bigger)
    assert await _generation(sessions, "host1") == 2
    async with sessions() as s:
        assert (await placement.inventories(s))["host1"]["MEMORY_MB"].capacity == 7680
        rows = (await s.execute(select(Inventory))).scalars().all()
    assert len(rows) == 3  # updated in place, not duplicated

    await _provider(sessions, "host1", {**bigger, "VCPU": InventoryRecord(8, 0, 16.0)})
    assert await _generation(sessions, "host1") == 3
    await _provider(sessions, "host1", {**bigger, "VCPU": InventoryRecord(8, 0, 16.0)})
    assert await _generation(sessions, "host1") == 3


async def test_providers_are_independent(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    await _provider(sessions, "host2", {"VCPU": InventoryRecord(2)})
    async with sessions() as s:
        invs = await placement.inventories(s)
    assert invs == {"host1": HOST, "host2": {"VCPU": InventoryRecord(2)}}


# -- claims ---------------------------------------------------------------------------


async def test_claim_within_capacity(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    await _claim(sessions, "vm1", "host1", SMALL, project_id="p1", user_id="u1")
    assert await _allocs(sessions, "vm1") == {"host1": SMALL}
    assert await _usages(sessions) == {"host1": SMALL}
    assert await _consumers(sessions) == {"vm1": ("p1", "u1")}


async def test_claim_up_to_exactly_capacity(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    full = {"VCPU": 32, "MEMORY_MB": 3584, "DISK_GB": 100}
    await _claim(sessions, "vm1", "host1", full)
    assert await _usages(sessions) == {"host1": full}


@pytest.mark.parametrize("too_much", [
    {"VCPU": 33},
    {"MEMORY_MB": 3585},  # total 4096 but 512 reserved
    {"DISK_GB": 101},
    {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 101},  # one class over is enough
])
async def test_claim_beyond_capacity_fails_and_changes_nothing(
        sessions: Sessions, too_much: dict[str, int]) -> None:
    await _provider(sessions, "host1")
    with pytest.raises(ClaimFailed, match="exceeds capacity"):
        await _claim(sessions, "vm1", "host1", too_much)
    assert await _usages(sessions) == {}
    assert await _allocs(sessions, "vm1") == {}
    assert await _consumers(sessions) == {}


async def test_failed_claim_caught_inside_a_transaction_writes_nothing(
        sessions: Sessions) -> None:
    """The scheduler catches ClaimFailed and tries the next host in the same
    transaction: the failed attempt must leave no allocation or consumer."""
    await _provider(sessions, "host1")
    await _provider(sessions, "host2")
    async with sessions() as s, s.begin():
        with pytest.raises(ClaimFailed):
            await placement.claim(s, "vm1", "host1", {**SMALL, "DISK_GB": 500})
        await placement.claim(s, "vm1", "host2", SMALL)
    assert await _allocs(sessions, "vm1") == {"host2": SMALL}
    assert await _usages(sessions) == {"host2": SMALL}


async def test_claims_add_up_against_capacity(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    big = {"VCPU": 4, "MEMORY_MB": 1536, "DISK_GB": 40}
    await _claim(sessions, "vm1", "host1", big)
    await _claim(sessions, "vm2", "host1", big)
    with pytest.raises(ClaimFailed, match=r"MEMORY_MB 3072\+1536 exceeds capacity 3584"):
        await _claim(sessions, "vm3", "host1", big)
    assert await _usages(sessions) == {"host1": {"VCPU": 8, "MEMORY_MB": 3072,
                                                 "DISK_GB": 80}}
    assert set(await _consumers(sessions)) == {"vm1", "vm2"}


async def test_claim_on_unknown_provider_or_class_fails(sessions: Sessions) -> None:
    await _provider(sessions, "host1", {"VCPU": InventoryRecord(4)})
    with pytest.raises(ClaimFailed, match="no resource provider 'nowhere'"):
        await _claim(sessions, "vm1", "nowhere", SMALL)
    with pytest.raises(ClaimFailed, match="has no MEMORY_MB inventory"):
        await _claim(sessions, "vm1", "host1", SMALL)
    assert await _usages(sessions) == {}


async def test_zero_amounts_are_not_allocated(sessions: Sessions) -> None:
    await _provider(sessions, "host1", {"VCPU": InventoryRecord(4)})
    await _claim(sessions, "vm1", "host1", {"VCPU": 1, "MEMORY_MB": 0})
    assert await _allocs(sessions, "vm1") == {"host1": {"VCPU": 1}}


async def test_a_successful_claim_bumps_the_provider_generation(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    before = await _generation(sessions, "host1")
    await _claim(sessions, "vm1", "host1", SMALL)
    assert await _generation(sessions, "host1") == before + 1


async def test_concurrent_claims_never_overcommit(sessions: Sessions) -> None:
    """20 claims race for a host with room for exactly 5."""
    request = {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 10}
    await _provider(sessions, "host1", {"VCPU": InventoryRecord(10),
                                        "MEMORY_MB": InventoryRecord(6144, 1024),
                                        "DISK_GB": InventoryRecord(1000)})
    results = await asyncio.gather(
        *(_claim(sessions, f"vm{i}", "host1", request) for i in range(20)),
        return_exceptions=True)
    unexpected = [r for r in results if r is not None and not isinstance(r, ClaimFailed)]
    assert unexpected == []
    assert sum(r is None for r in results) == 5
    assert await _usages(sessions) == {"host1": {rc: 5 * n for rc, n in request.items()}}
    assert len(await _consumers(sessions)) == 5


# -- usage sums (summed by the database) ---------------------------------------------------


async def test_usages_sum_several_allocations_per_provider(sessions: Sessions) -> None:
    """Several consumers on one provider, one consumer on another, one provider
    with nothing on it: sums per provider and class; the empty one is absent."""
    for name in ("busy", "single", "empty"):
        await _provider(sessions, name)
    await _claim(sessions, "vm1", "busy", {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10})
    await _claim(sessions, "vm2", "busy", {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 20})
    await _claim(sessions, "vm3", "busy", {"VCPU": 4, "MEMORY_MB": 0, "DISK_GB": 5})
    await _claim(sessions, "vm4", "single", {"VCPU": 3, "MEMORY_MB": 256, "DISK_GB": 1})
    expected = {"busy": {"VCPU": 7, "MEMORY_MB": 1536, "DISK_GB": 35},
                "single": {"VCPU": 3, "MEMORY_MB": 256, "DISK_GB": 1}}
    assert await _usages(sessions) == expected
    async with sessions() as s:
        ids = dict((await s.execute(select(ResourceProvider.name, ResourceProvider.id))).all())
        assert await placement.provider_usage(s, ids["busy"]) == expected["busy"]
        assert await placement.provider_usage(s, ids["empty"]) == {}
        assert await placement.provider_inventory(s, ids["empty"]) == HOST
    # A consumer holding two providers (a migration's source side) counts on each.
    async with sessions() as s, s.begin():
        await placement.move_allocations(s, "vm4", "mig1")
        await placement.claim(s, "mig1", "busy", {"VCPU": 1})
    expected["busy"]["VCPU"] += 1
    assert await _usages(sessions) == expected


async def test_claim_checks_only_the_chosen_providers_usage(sessions: Sessions) -> None:
    """A full neighbour does not count against the provider being claimed."""
    await _provider(sessions, "full")
    await _provider(sessions, "free")
    await _claim(sessions, "big", "full", {"VCPU": 32, "MEMORY_MB": 3584, "DISK_GB": 100})
    await _claim(sessions, "vm1", "free", {"VCPU": 32, "MEMORY_MB": 3584, "DISK_GB": 100})
    with pytest.raises(ClaimFailed, match=r"VCPU 32\+1 exceeds capacity 32"):
        await _claim(sessions, "vm2", "free", {"VCPU": 1})


async def test_inventory_is_matches_only_the_exact_inventory(sessions: Sessions) -> None:
    await _provider(sessions, "host1")

    async def matches(name: str, inventory: dict[str, InventoryRecord]) -> bool:
        async with sessions() as s:
            return bool((await s.execute(select(placement.inventory_is(name, inventory))
                                         )).scalar_one())

    assert await matches("host1", HOST)
    assert not await matches("host1", {**HOST, "VCPU": InventoryRecord(8, 0, 2.0)})
    assert not await matches("host1", {**HOST, "MEMORY_MB": InventoryRecord(4096, 0, 1.0)})
    assert not await matches("host1", {**HOST, "GPU": InventoryRecord(1)})
    assert not await matches("nowhere", HOST)


# -- moving and deleting allocations ---------------------------------------------------------


async def test_move_allocations_hands_everything_over(sessions: Sessions) -> None:
    await _provider(sessions, "src")
    await _provider(sessions, "other")
    await _claim(sessions, "vm1", "src", SMALL, project_id="p1", user_id="u1")
    await _claim(sessions, "vm1", "other", {"VCPU": 2})
    before = await _usages(sessions)
    async with sessions() as s, s.begin():
        await placement.move_allocations(s, "vm1", "mig1")
    assert await _allocs(sessions, "vm1") == {}
    assert await _allocs(sessions, "mig1") == {"src": SMALL, "other": {"VCPU": 2}}
    assert await _usages(sessions) == before  # same resources, new holder
    assert await _consumers(sessions) == {"mig1": ("p1", "u1")}


async def test_move_allocations_with_replace_drops_the_targets_old_claims(
        sessions: Sessions) -> None:
    """Revert: the instance gives up its destination claim and takes back the
    source side the migration held."""
    await _provider(sessions, "src")
    await _provider(sessions, "dst")
    await _claim(sessions, "mig1", "src", SMALL)
    await _claim(sessions, "vm1", "dst", {"VCPU": 4, "MEMORY_MB": 1024, "DISK_GB": 20})
    async with sessions() as s, s.begin():
        await placement.move_allocations(s, "mig1", "vm1")
    assert await _allocs(sessions, "vm1") == {"src": SMALL}
    assert await _allocs(sessions, "mig1") == {}
    assert await _usages(sessions) == {"src": SMALL}
    assert set(await _consumers(sessions)) == {"vm1"}


async def test_move_allocations_without_replace_keeps_the_targets_claims(
        sessions: Sessions) -> None:
    await _provider(sessions, "src")
    await _provider(sessions, "dst")
    await _claim(sessions, "mig1", "src", SMALL)
    await _claim(sessions, "vm1", "dst", SMALL)
    async with sessions() as s, s.begin():
        await placement.move_allocations(s, "mig1", "vm1", replace=False)
    assert await _allocs(sessions, "vm1") == {"src": SMALL, "dst": SMALL}


async def test_move_allocations_without_replace_merges_on_a_shared_provider(
        sessions: Sessions) -> None:
    await _provider(sessions, "src")
    await _claim(sessions, "mig1", "src", SMALL)
    await _claim(sessions, "vm1", "src", SMALL)
    async with sessions() as s, s.begin():
        await placement.move_allocations(s, "mig1", "vm1", replace=False)
    assert await _usages(sessions) == {"src": {rc: 2 * n for rc, n in SMALL.items()}}


async def test_delete_allocations_frees_the_room(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    await _provider(sessions, "host2")
    await _claim(sessions, "vm1", "host1", SMALL)
    await _claim(sessions, "vm1", "host2", SMALL)
    await _claim(sessions, "vm2", "host1", SMALL)
    generations = [await _generation(sessions, h) for h in ("host1", "host2")]
    async with sessions() as s, s.begin():
        await placement.delete_allocations(s, "vm1")
    assert await _allocs(sessions, "vm1") == {}
    assert await _usages(sessions) == {"host1": SMALL}
    assert set(await _consumers(sessions)) == {"vm2"}
    assert [await _generation(sessions, h) for h in ("host1", "host2")] == [
        g + 1 for g in generations]
    # The room is really free again.
    full = {"VCPU": 31, "MEMORY_MB": 3072, "DISK_GB": 90}
    await _claim(sessions, "vm3", "host1", full)


async def test_delete_allocations_of_nobody_is_harmless(sessions: Sessions) -> None:
    await _provider(sessions, "host1")
    await _claim(sessions, "vm1", "host1", SMALL)
    async with sessions() as s, s.begin():
        await placement.delete_allocations(s, "ghost")
    assert await _usages(sessions) == {"host1": SMALL}
