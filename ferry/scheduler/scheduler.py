"""select_destinations: filter, weigh, claim; return the host and alternates.

The first candidate whose claim succeeds becomes the destination; the next
`max_attempts - 1` candidates are kept as alternates for when the chosen
host's pre-flight fails (their claims are made only when they are tried).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ferry.scheduler import placement
from ferry.scheduler.filters import filter_hosts
from ferry.scheduler.hostcache import HostStateCache
from ferry.scheduler.hoststate import HostState, RequestSpec
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


async def host_states(session: AsyncSession, down_after: float,
                      cache: HostStateCache | None = None) -> list[HostState]:
    """Every compute host with its inventory and summed usage.

    With a cache (a conductor keeps one), only providers whose generation
    changed since the last decision are read again; without one, all are.
    """
    return await (cache or HostStateCache()).host_states(session, down_after)


async def candidates(session: AsyncSession, spec: RequestSpec, down_after: float,
                     cache: HostStateCache | None = None) -> list[HostState]:
    hosts = await host_states(session, down_after, cache)
    passed, rejected = filter_hosts(hosts, spec)
    if not passed:
        detail = "; ".join(f"{h}: {r}" for h, r in sorted(rejected.items()))
        raise NoValidHost(detail)
    return weigh(passed)


async def select_destinations(
    session: AsyncSession, spec: RequestSpec, *, down_after: float, max_attempts: int = 3,
    cache: HostStateCache | None = None,
) -> Selection:
    """Claim the best host for `spec.instance_uuid`; call inside a transaction.

    Requests that arrive together see the same host states and rank the same
    host first. Waiting for each other's transactions on that host would
    serialise them (the scale benchmark's burst of migrations: ~1 s a
    decision), so a candidate another request is claiming on right now is
    passed over for the next; only when every other candidate failed are the
    busy ones waited for, best first.
    """
    ranked = await candidates(session, spec, down_after, cache)
    busy: list[int] = []
    failed: set[int] = set()

    async def claimed(i: int, skip_locked: bool) -> bool:
        try:
            await placement.claim(session, spec.instance_uuid, ranked[i].host, spec.resources,
                                  project_id=spec.project_id, user_id=spec.user_id,
                                  skip_locked=skip_locked)
            return True
        except placement.ProviderBusy:
            busy.append(i)
        except placement.ClaimFailed as exc:
            log.info("claim on %s failed: %s", ranked[i].host, exc)
            failed.add(i)
        return False

    for i in range(len(ranked)):
        if await claimed(i, skip_locked=True):
            return _selection(ranked, i, failed, max_attempts)
    for i in list(busy):
        if await claimed(i, skip_locked=False):
            return _selection(ranked, i, failed, max_attempts)
    raise NoValidHost("every candidate's claim failed")


def _selection(ranked: list[HostState], chosen: int, failed: set[int],
               max_attempts: int) -> Selection:
    """The chosen host, and as alternates the best others whose claim did not
    fail here (a busy host ranked above the chosen one may still have room)."""
    rest = [h.host for i, h in enumerate(ranked) if i != chosen and i not in failed]
    return Selection(ranked[chosen].host, tuple(rest[: max(0, max_attempts - 1)]))
