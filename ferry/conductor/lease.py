"""Which conductor owns a migration: a lease row-lock in the database.

A conductor runs a migration only while it holds the lease (`owner`,
`lease_expires` on the migration row), taken and renewed with
compare-and-swap. When a conductor dies its leases run out and another
conductor takes the migrations over, doing what `ON_RESTART` says. A
conductor that restarts under the same name takes its own leases back at
once, so the embedded default recovers without waiting for expiry.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.conductor.states import FINAL, State
from ferry.db.models import Migration, utcnow

# Migrations nobody needs to drive: final ones, and VERIFY (waiting for the user).
_IDLE = [s.value for s in FINAL] + [State.VERIFY.value]


class Leases:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], owner: str,
                 ttl: float) -> None:
        self.sessions = sessions
        self.owner = owner
        self.ttl = dt.timedelta(seconds=ttl)

    def _free(self, now: dt.datetime):  # type: ignore[no-untyped-def]
        return or_(Migration.owner.is_(None), Migration.owner == self.owner,
                   Migration.lease_expires < now)

    async def acquire(self, migration_uuid: str) -> bool:
        now = utcnow()
        async with self.sessions() as s, s.begin():
            res = await s.execute(
                update(Migration)
                .where(Migration.uuid == migration_uuid, self._free(now))
                .values(owner=self.owner, lease_expires=now + self.ttl)
                .execution_options(synchronize_session=False))
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    async def renew(self, migration_uuids: list[str]) -> set[str]:
        """Extend our leases; returns the ones we no longer hold. The caller's
        list was read before this transaction, so that includes any lease
        released meanwhile by a migration that finished: the caller tells
        those apart (see `ConductorEndpoint.renew_leases`)."""
        if not migration_uuids:
            return set()
        now = utcnow()
        async with self.sessions() as s, s.begin():
            await s.execute(
                update(Migration)
                .where(Migration.uuid.in_(migration_uuids), Migration.owner == self.owner)
                .values(lease_expires=now + self.ttl)
                .execution_options(synchronize_session=False))
            held = set((await s.execute(select(Migration.uuid).where(
                Migration.uuid.in_(migration_uuids), Migration.owner == self.owner))
            ).scalars())
        return set(migration_uuids) - held

    async def release(self, migration_uuid: str) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(
                update(Migration)
                .where(Migration.uuid == migration_uuid, Migration.owner == self.owner)
                .values(owner=None, lease_expires=None)
                .execution_options(synchronize_session=False))

    async def orphans(self) -> list[tuple[str, str]]:
        """Unfinished migrations that nobody (alive) drives: (uuid, state)."""
        now = utcnow()
        async with self.sessions() as s:
            rows = (await s.execute(
                select(Migration.uuid, Migration.state).where(
                    Migration.state.not_in(_IDLE),
                    or_(Migration.owner.is_(None), Migration.owner == self.owner,
                        and_(Migration.lease_expires.is_not(None),
                             Migration.lease_expires < now)))
                .order_by(Migration.id))).all()
        return [(u, st) for u, st in rows]
