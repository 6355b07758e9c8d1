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
    invs = await placement.inventories(session)
    used = await placement.usages(session)
    now = utcnow()
    services = (
        await session.execute(select(Service).where(Service.binary == "ferry-compute"))
    ).scalars()
    return [
        HostState(
            host=s.host,
            zone=s.zone,
            enabled=not s.disabled,
            up=is_up(s.last_seen_up, s.forced_down, now, down_after),
            inventory=invs.get(s.host, {}),
            used=used.get(s.host, {}),
            data_address=s.data_address,
        )
        for s in services
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
