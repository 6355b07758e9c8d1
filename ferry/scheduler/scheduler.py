"""select_destinations: filter, weigh, claim; return the host and alternates.

The first candidate whose claim succeeds becomes the destination; the next
`max_attempts - 1` candidates are kept as alternates for when the chosen
host's pre-flight fails (their claims are made only when they are tried).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Inventory, ResourceProvider, Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.filters import filter_hosts
from ferry.scheduler.hoststate import HostState, RequestSpec
from ferry.scheduler.placement import InventoryRecord
from ferry.scheduler.weighers import weigh

log = logging.getLogger(__name__)


class NoValidHost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(f"No valid host was found. {reason}".strip())
        self.reason = reason


@dataclass(frozen=True)
class Selection:
    host: str
    alternates: tuple[str, ...]


async def host_states(session: AsyncSession, down_after: float) -> list[HostState]:
    """Every compute host with its inventory and summed usage, in two queries.

    Services joined to their inventories (one row per host and resource class)
    and the allocations summed per provider by the database, both read as
    plain Core rows: the cost grows with hosts, not with allocations, and no
    ORM objects are built.
    """
    # is_up() per host costs a datetime subtraction each; one cutoff is the same test.
    cutoff = utcnow() - dt.timedelta(seconds=down_after)
    conn = await session.connection()
    rows = (await conn.execute(
        select(Service.host, Service.zone, Service.disabled, Service.last_seen_up,
               Service.forced_down, Service.data_address, ResourceProvider.id,
               Inventory.resource_class, Inventory.total, Inventory.reserved,
               Inventory.allocation_ratio)
        .select_from(Service)
        .outerjoin(ResourceProvider, ResourceProvider.name == Service.host)
        .outerjoin(Inventory, Inventory.provider_id == ResourceProvider.id)
        .where(Service.binary == "ferry-compute")
    )).all()
    used = await placement.usages_by_id(session)
    states: dict[str, HostState] = {}
    for host, zone, disabled, seen, forced_down, address, rp_id, rc, total, reserved, \
            ratio in rows:
        h = states.get(host)
        if h is None:
            h = states[host] = HostState(
                host=host, zone=zone, enabled=not disabled,
                up=not forced_down and seen is not None and seen >= cutoff,
                inventory={}, used=dict(used.get(rp_id, {})), data_address=address)
        if rc is not None:
            h.inventory[rc] = InventoryRecord(total, reserved, ratio)
    return list(states.values())


async def candidates(session: AsyncSession, spec: RequestSpec,
                     down_after: float) -> list[HostState]:
    hosts = await host_states(session, down_after)
    passed, rejected = filter_hosts(hosts, spec)
    if not passed:
        detail = "; ".join(f"{h}: {r}" for h, r in sorted(rejected.items()))
        raise NoValidHost(detail)
    return weigh(passed)


async def select_destinations(
    session: AsyncSession, spec: RequestSpec, *, down_after: float, max_attempts: int = 3
) -> Selection:
    """Claim the best host for `spec.instance_uuid`; call inside a transaction."""
    ranked = await candidates(session, spec, down_after)
    for i, h in enumerate(ranked):
        try:
            await placement.claim(session, spec.instance_uuid, h.host, spec.resources,
                                  project_id=spec.project_id, user_id=spec.user_id)
        except placement.ClaimFailed as exc:
            log.info("claim on %s failed: %s", h.host, exc)
            continue
        rest = tuple(x.host for x in ranked[i + 1:])[: max(0, max_attempts - 1)]
        return Selection(h.host, rest)
    raise NoValidHost("every candidate's claim failed")
