"""What the scheduler knows about every compute host, kept between decisions.

A decision needs each host's liveness (changes with every heartbeat) and its
inventory and usage (change only when placement writes). Placement bumps a
provider's `generation` in the same transaction as every write to its
inventories or allocations, so a cached (inventory, usage) pair stays true
for as long as the provider's generation is the one it was read with. Each
decision therefore reads one row per host (service flags, last heartbeat,
provider id and generation) and re-reads inventory and usage only for the
providers whose generation moved: on a cluster of 1,000 hosts that is one
small query instead of summing every allocation again.

Why it cannot go stale unnoticed:
- The generation is read before the inventory and usage. If another commit
  lands in between, the entry holds newer usage under the older generation,
  and the next decision sees the generation differ and reads it again.
- A transaction sees its own uncommitted writes, which may yet roll back and
  leave the same generation number to a different future commit. Placement
  records every provider whose generation a session bumped
  (`placement.touched_providers`); those are read fresh and never stored.
- The claim itself never trusts the cache: it compares and swaps the
  generation and re-checks capacity against the database, so a stale entry
  can cost a choice, never an overcommit.

One cache belongs to one database (provider ids are per database): a
conductor keeps one in its step context. To cache another per-host fact that
changes only with placement writes, add it to `_Entry` and to `_read`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import ResourceProvider, Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.hoststate import HostState
from ferry.scheduler.placement import InventoryRecord, Resources

_BULK_READ = 200


@dataclass(frozen=True)
class _Entry:
    generation: int
    inventory: dict[str, InventoryRecord]
    used: Resources


class HostStateCache:
    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self.reads = 0  # providers read from the database, for tests and benchmarks

    async def host_states(self, session: AsyncSession, down_after: float) -> list[HostState]:
        """Every compute host, up to date as of this call (see the module docstring)."""
        # is_up() per host costs a datetime subtraction each; one cutoff is the same test.
        cutoff = utcnow() - dt.timedelta(seconds=down_after)
        conn = await session.connection()
        hosts = (await conn.execute(
            select(Service.host, Service.zone, Service.disabled, Service.last_seen_up,
                   Service.forced_down, Service.data_address, ResourceProvider.id,
                   ResourceProvider.generation)
            .select_from(Service)
            .outerjoin(ResourceProvider, ResourceProvider.name == Service.host)
            .where(Service.binary == "ferry-compute")
        )).all()
        touched = placement.touched_providers(session)
        stale = {rp_id: gen for *_, rp_id, gen in hosts
                 if rp_id is not None and (rp_id in touched or (
                     (e := self._entries.get(rp_id)) is None or e.generation != gen))}
        fresh = await self._read(session, stale) if stale else {}
        for rp_id, entry in fresh.items():
            if rp_id not in touched:
                self._entries[rp_id] = entry
        current = {rp_id for *_, rp_id, _gen in hosts}
        if not current.issuperset(self._entries):  # a host was deleted: forget it
            self._entries = {k: v for k, v in self._entries.items() if k in current}
        states = []
        for host, zone, disabled, seen, forced_down, address, rp_id, _gen in hosts:
            known = None if rp_id is None else (fresh.get(rp_id) or self._entries.get(rp_id))
            states.append(HostState(
                host=host, zone=zone, enabled=not disabled,
                up=not forced_down and seen is not None and seen >= cutoff,
                inventory=known.inventory if known else {},
                used=dict(known.used) if known else {}, data_address=address))
        return states

    async def _read(self, session: AsyncSession, generations: dict[int, int]
                    ) -> dict[int, _Entry]:
        """Inventory and summed usage of these providers, read after their generations."""
        # Past a few hundred ids one unfiltered read is cheaper than an IN list.
        ids = list(generations) if len(generations) <= _BULK_READ else None
        inventories = await placement.inventories_by_id(session, ids)
        used = await placement.usages_by_id(session, ids)
        self.reads += len(generations)
        return {rp_id: _Entry(gen, inventories.get(rp_id, {}), used.get(rp_id, {}))
                for rp_id, gen in generations.items()}
