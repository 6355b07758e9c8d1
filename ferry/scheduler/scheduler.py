"""select_destinations: filter, weigh, claim; return the host and alternates.

The first candidate whose claim succeeds becomes the destination; the next
`max_attempts - 1` candidates are kept as alternates for when the chosen
host's pre-flight fails (their claims are made only when they are tried).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.filters import filter_hosts
from ferry.scheduler.hoststate import HostState, RequestSpec, is_up
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
    """Every compute host with its inventory and summed usage: three set-based
    queries of plain columns (no ORM objects), whatever the number of allocations."""
    invs = await placement.inventories(session)
    used = await placement.usages(session)
    now = utcnow()
    rows = await session.execute(
        select(Service.host, Service.zone, Service.disabled, Service.last_seen_up,
               Service.forced_down, Service.data_address)
        .where(Service.binary == "ferry-compute")
    )
    return [
        HostState(
            host=host,
            zone=zone,
            enabled=not disabled,
            up=is_up(seen, forced_down, now, down_after),
            inventory=invs.get(host, {}),
            used=used.get(host, {}),
            data_address=address,
        )
        for host, zone, disabled, seen, forced_down, address in rows
    ]


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
