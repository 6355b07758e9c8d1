"""Placement: resource providers, inventories and allocations.

Each compute host is a resource provider with VCPU, MEMORY_MB and DISK_GB
inventories. A consumer (an instance, or a migration while it holds the source
side of a move) owns allocations. Every write to a provider first bumps its
`generation` with compare-and-swap, so two claims racing for the last room on
a host cannot both succeed: the loser retries and then sees the winner's usage.

Reads that run on every scheduling decision select plain columns and let the
database sum allocations (GROUP BY), so a decision costs a few thousand small
rows, not one ORM object per allocation; they run on the session's connection
(Core rows, no ORM loading step) inside the caller's transaction. The same
statements run on SQLite and PostgreSQL.

To add a resource class: report it from the compute host's resources and add
it to `RESOURCE_CLASSES`; filters and weighers read usages generically.
"""

from __future__ import annotations

import uuid as uuidlib
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Allocation, Consumer, Inventory, ResourceProvider

RESOURCE_CLASSES = ("VCPU", "MEMORY_MB", "DISK_GB")
MAX_CAS_RETRIES = 10


class ClaimFailed(Exception):
    pass


class ProviderBusy(ClaimFailed):
    """Another transaction holds the provider (it is claiming there right now)."""


@dataclass(frozen=True)
class InventoryRecord:
    total: int
    reserved: int = 0
    allocation_ratio: float = 1.0
    # Computed once: filters and weighers ask for it thousands of times a decision.
    capacity: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "capacity",
                           int((self.total - self.reserved) * self.allocation_ratio))


Resources = dict[str, int]


_TOUCHED = "ferry.placement.touched"


def touched_providers(session: AsyncSession) -> set[int]:
    """Ids of the providers whose generation this session has bumped.

    Their rows may hold this transaction's uncommitted writes, which a rollback
    can undo while leaving the same generation number to some later commit:
    readers that cache by generation (the scheduler's host-state cache) must
    not keep what they read of these. Kept for the session's life, which in
    Ferry is one unit of work.
    """
    touched: set[int] = session.info.setdefault(_TOUCHED, set())
    return touched


async def ensure_provider(
    session: AsyncSession, name: str, inventory: dict[str, InventoryRecord]
) -> ResourceProvider:
    rp = (
        await session.execute(select(ResourceProvider).where(ResourceProvider.name == name))
    ).scalar_one_or_none()
    if rp is None:
        rp = ResourceProvider(uuid=str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, name)), name=name)
        session.add(rp)
        await session.flush()
        touched_providers(session).add(rp.id)  # SQLite may reuse the id after a rollback
    existing = {
        inv.resource_class: inv
        for inv in (
            await session.execute(select(Inventory).where(Inventory.provider_id == rp.id))
        ).scalars()
    }
    changed = False
    for rc, rec in inventory.items():
        inv = existing.get(rc)
        if inv is None:
            session.add(Inventory(provider_id=rp.id, resource_class=rc, total=rec.total,
                                  reserved=rec.reserved, allocation_ratio=rec.allocation_ratio))
            changed = True
        elif (inv.total, inv.reserved, inv.allocation_ratio) != (
            rec.total, rec.reserved, rec.allocation_ratio
        ):
            inv.total, inv.reserved, inv.allocation_ratio = (
                rec.total, rec.reserved, rec.allocation_ratio)
            changed = True
    await session.flush()
    if changed:
        # Compare-and-swap like every other write: `rp` may have been read before
        # a claim committed, and writing its generation + 1 would then hand out
        # that claim's number again (a cache keyed by it would not see the change).
        rp = await _bump_generation(session, name)
    return rp


def inventory_is(name: str, inventory: dict[str, InventoryRecord]) -> ColumnElement[bool]:
    """SQL condition: provider `name` holds exactly these inventory records.

    Lets a caller make "update X only if the inventory did not change" a
    single UPDATE ... WHERE (the compute heartbeat's common case). Inventories
    are unique per (provider, class), so a full match counts len(inventory).
    """
    if not inventory:
        return true()
    matching = (
        select(func.count())
        .select_from(Inventory)
        .join(ResourceProvider, Inventory.provider_id == ResourceProvider.id)
        .where(ResourceProvider.name == name,
               or_(*(and_(Inventory.resource_class == rc, Inventory.total == rec.total,
                          Inventory.reserved == rec.reserved,
                          Inventory.allocation_ratio == rec.allocation_ratio)
                     for rc, rec in inventory.items())))
        .scalar_subquery()
    )
    return matching == len(inventory)


async def inventories(session: AsyncSession) -> dict[str, dict[str, InventoryRecord]]:
    """Every provider's inventory, by provider name and resource class."""
    conn = await session.connection()
    rows = (await conn.execute(
        select(ResourceProvider.name, Inventory.resource_class, Inventory.total,
               Inventory.reserved, Inventory.allocation_ratio)
        .join(Inventory, Inventory.provider_id == ResourceProvider.id)
    )).all()
    out: dict[str, dict[str, InventoryRecord]] = defaultdict(dict)
    for name, rc, total, reserved, ratio in rows:
        out[name][rc] = InventoryRecord(total, reserved, ratio)
    return dict(out)


async def usages_by_id(session: AsyncSession, ids: Collection[int] | None = None
                       ) -> dict[int, Resources]:
    """Allocations summed per provider id and class by the database (only the
    providers in `ids`, when given).

    A GROUP BY over the one table and nothing else: its plan is a scan and a
    hash aggregate whatever the statistics say (joined to other tables, a
    planner without fresh statistics was seen to re-aggregate once per host).
    """
    query = (select(Allocation.provider_id, Allocation.resource_class,
                    func.sum(Allocation.used))
             .group_by(Allocation.provider_id, Allocation.resource_class))
    if ids is not None:
        query = query.where(Allocation.provider_id.in_(list(ids)))
    conn = await session.connection()
    out: dict[int, Resources] = defaultdict(dict)
    for provider_id, rc, used in (await conn.execute(query)).all():
        out[provider_id][rc] = int(used)  # PostgreSQL's SUM of an integer is a bigint
    return dict(out)


async def inventories_by_id(session: AsyncSession, ids: Collection[int] | None = None
                            ) -> dict[int, dict[str, InventoryRecord]]:
    """Inventories by provider id and class (only the providers in `ids`, when given)."""
    query = select(Inventory.provider_id, Inventory.resource_class, Inventory.total,
                   Inventory.reserved, Inventory.allocation_ratio)
    if ids is not None:
        query = query.where(Inventory.provider_id.in_(list(ids)))
    conn = await session.connection()
    out: dict[int, dict[str, InventoryRecord]] = defaultdict(dict)
    for provider_id, rc, total, reserved, ratio in (await conn.execute(query)).all():
        out[provider_id][rc] = InventoryRecord(total, reserved, ratio)
    return dict(out)


async def usages(session: AsyncSession) -> dict[str, Resources]:
    """What every provider has allocated, by provider name and resource class.

    Providers without allocations are absent (their usage is zero).
    """
    by_id = await usages_by_id(session)
    conn = await session.connection()
    names = dict((await conn.execute(select(ResourceProvider.id, ResourceProvider.name))).all())
    return {names[pid]: used for pid, used in by_id.items()}


async def provider_usage(session: AsyncSession, provider_id: int) -> Resources:
    """One provider's allocations summed by class (uses the provider_id index)."""
    rows = await session.execute(
        select(Allocation.resource_class, func.sum(Allocation.used))
        .where(Allocation.provider_id == provider_id)
        .group_by(Allocation.resource_class)
    )
    return {rc: int(used) for rc, used in rows}


async def provider_inventory(session: AsyncSession, provider_id: int
                             ) -> dict[str, InventoryRecord]:
    rows = await session.execute(
        select(Inventory.resource_class, Inventory.total, Inventory.reserved,
               Inventory.allocation_ratio)
        .where(Inventory.provider_id == provider_id)
    )
    return {rc: InventoryRecord(total, reserved, ratio) for rc, total, reserved, ratio in rows}


async def allocations_for(session: AsyncSession, consumer: str) -> dict[str, Resources]:
    rows = await session.execute(
        select(ResourceProvider.name, Allocation.resource_class, Allocation.used)
        .join(ResourceProvider, Allocation.provider_id == ResourceProvider.id)
        .where(Allocation.consumer_id == consumer)
    )
    out: dict[str, Resources] = defaultdict(dict)
    for name, rc, used in rows:
        out[name][rc] = used
    return dict(out)


async def _bump_generation(session: AsyncSession, provider: str,
                           skip_locked: bool = False) -> ResourceProvider:
    for _ in range(MAX_CAS_RETRIES):
        query = (select(ResourceProvider).where(ResourceProvider.name == provider)
                 .execution_options(populate_existing=True))
        if skip_locked:
            # Lock the row now, or hear at once that another transaction holds
            # it (PostgreSQL; SQLite has one writer at a time and no FOR UPDATE).
            query = query.with_for_update(skip_locked=True)
        rp = (await session.execute(query)).scalar_one_or_none()
        if rp is None:
            if skip_locked and await _exists(session, provider):
                raise ProviderBusy(f"{provider} is being claimed by another request")
            raise ClaimFailed(f"no resource provider {provider!r}")
        res = await session.execute(
            update(ResourceProvider)
            .where(ResourceProvider.id == rp.id, ResourceProvider.generation == rp.generation)
            .values(generation=rp.generation + 1)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            touched_providers(session).add(rp.id)
            return rp
    raise ClaimFailed(f"provider {provider!r} kept changing (generation conflict)")


async def _exists(session: AsyncSession, provider: str) -> bool:
    found = await session.execute(
        select(ResourceProvider.id).where(ResourceProvider.name == provider))
    return found.first() is not None


async def _ensure_consumer(session: AsyncSession, consumer: str, project_id: str,
                           user_id: str) -> None:
    c = await session.get(Consumer, consumer)
    if c is None:
        session.add(Consumer(uuid=consumer, project_id=project_id, user_id=user_id))
    else:
        c.generation += 1
    await session.flush()


async def claim(
    session: AsyncSession,
    consumer: str,
    provider: str,
    resources: Resources,
    *,
    project_id: str = "",
    user_id: str = "",
    skip_locked: bool = False,
) -> None:
    """Allocate `resources` on `provider` for `consumer`, or raise ClaimFailed.

    Call inside a transaction; the provider row is written first so the
    capacity check below sees every claim that committed before ours (a racing
    claim on the same provider waits on that row, then fails its
    compare-and-swap and re-reads). Only this provider's rows are summed.
    With `skip_locked`, a provider that another transaction is claiming on
    raises ProviderBusy at once instead of waiting for that transaction.
    """
    # In a savepoint: a claim that fails leaves nothing behind, neither its
    # generation bump nor the provider's row lock. Kept, the lock would make
    # two requests that each failed on one host and want the other's wait for
    # each other (a deadlock), and the bump would make every cache re-read.
    async with session.begin_nested():
        rp = await _bump_generation(session, provider, skip_locked)
        await _allocate(session, rp, consumer, resources, project_id, user_id)


async def _allocate(session: AsyncSession, rp: ResourceProvider, consumer: str,
                    resources: Resources, project_id: str, user_id: str) -> None:
    provider = rp.name
    invs = await provider_inventory(session, rp.id)
    used = await provider_usage(session, rp.id)
    for rc, amount in resources.items():
        if amount <= 0:
            continue
        inv = invs.get(rc)
        if inv is None:
            raise ClaimFailed(f"{provider} has no {rc} inventory")
        if used.get(rc, 0) + amount > inv.capacity:
            raise ClaimFailed(
                f"{provider}: {rc} {used.get(rc, 0)}+{amount} exceeds capacity {inv.capacity}")
    await _ensure_consumer(session, consumer, project_id, user_id)
    for rc, amount in resources.items():
        if amount > 0:
            session.add(Allocation(provider_id=rp.id, consumer_id=consumer,
                                   resource_class=rc, used=amount))
    await session.flush()


async def delete_allocations(session: AsyncSession, consumer: str) -> None:
    held = await allocations_for(session, consumer)
    bumped = {(await _bump_generation(session, provider)).id for provider in held}
    gone = (await session.execute(
        delete(Allocation).where(Allocation.consumer_id == consumer)
        .returning(Allocation.provider_id))).scalars().all()
    # A claim for this consumer that committed after the read above put rows on
    # a provider not bumped yet: its usage changes here too, so must its generation.
    late = set(gone) - bumped
    if late:
        names = (await session.execute(select(ResourceProvider.name).where(
            ResourceProvider.id.in_(late)))).scalars().all()
        for name in names:
            await _bump_generation(session, name)
    await session.execute(delete(Consumer).where(Consumer.uuid == consumer))
    await session.flush()


async def move_allocations(session: AsyncSession, from_consumer: str, to_consumer: str,
                           *, replace: bool = True) -> None:
    """Give `from_consumer`'s allocations to `to_consumer` (Nova's move_allocations).

    With `replace`, whatever `to_consumer` held before is dropped first, as
    placement's POST /allocations does when it rewrites a consumer.
    """
    held = await allocations_for(session, from_consumer)
    if replace:
        await delete_allocations(session, to_consumer)
    for provider in held:
        await _bump_generation(session, provider)
    src = await session.get(Consumer, from_consumer)
    await _ensure_consumer(session, to_consumer, src.project_id if src else "",
                           src.user_id if src else "")
    # Merge row by row: without `replace` the target may already hold the same
    # class on the same provider, and the (provider, consumer, class) key is unique.
    rows = (await session.execute(select(Allocation).where(
        Allocation.consumer_id.in_((from_consumer, to_consumer))))).scalars().all()
    target = {(a.provider_id, a.resource_class): a for a in rows
              if a.consumer_id == to_consumer}
    for a in rows:
        if a.consumer_id != from_consumer:
            continue
        existing = target.get((a.provider_id, a.resource_class))
        if existing is not None:
            existing.used += a.used
            await session.delete(a)
        else:
            a.consumer_id = to_consumer
    await session.execute(delete(Consumer).where(Consumer.uuid == from_consumer))
    await session.flush()
