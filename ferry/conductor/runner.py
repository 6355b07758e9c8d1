"""Drive one migration through its states until it rests (final or VERIFY).

The runner is the only caller of the step handlers. When a step raises it
does what `ON_FAILURE` says: fire FAIL (the rollback step then runs), or
retry the idempotent step with backoff; after `rollback_attempts` retries it
marks the server ERROR with a fault saying where its copy is, and leaves the
migration where it is for a restarted conductor to resume.
"""

from __future__ import annotations

import asyncio
import logging
import random

from ferry.conductor.lease import Leases
from ferry.conductor.states import (
    FINAL,
    ON_FAILURE,
    ON_RESTART,
    Event,
    FailureAction,
    RestartAction,
    State,
)
from ferry.conductor.steps import STEPS, StepContext, load, mark_unrecoverable, record_failure
from ferry.conductor.transitions import ConcurrentUpdate, advance
from ferry.db.session import is_transient

log = logging.getLogger(__name__)

RESTING = FINAL | {State.VERIFY}
MAX_TRANSIENT_RETRIES = 10


class MigrationRunner:
    def __init__(self, ctx: StepContext, leases: Leases) -> None:
        self.ctx = ctx
        self.leases = leases
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()
        self._release = True

    def running(self) -> list[str]:
        return [u for u, t in self._tasks.items() if not t.done()]

    def holding(self) -> list[str]:
        """Migrations this runner drives under a lease it has taken (not those still
        waiting to take theirs: a renewal must not count those as lost)."""
        return sorted(self._held)

    def start(self, migration_uuid: str) -> None:
        """Run the migration in the background unless it already runs here."""
        task = self._tasks.get(migration_uuid)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._leased(migration_uuid, None),
                                   name=f"migration-{migration_uuid}")
        self._tasks[migration_uuid] = task

    def cancel(self, migration_uuid: str) -> None:
        """Our lease was taken over: stop driving this migration here."""
        task = self._tasks.get(migration_uuid)
        if task is not None:
            task.cancel()

    async def _leased(self, migration_uuid: str, recover_from: State | None) -> None:
        if not await self.leases.acquire(migration_uuid):
            log.info("migration %s is driven by another conductor", migration_uuid)
            return
        self._held.add(migration_uuid)
        try:
            if recover_from is not None and \
                    ON_RESTART[recover_from] == RestartAction.ROLL_BACK:
                await advance(self.ctx.sessions, migration_uuid, Event.FAIL,
                              expect=recover_from,
                              note=f"conductor restarted while {recover_from}: rolling back",
                              migration_fields={"error": f"interrupted while {recover_from}"})
            await self.run(migration_uuid)
        finally:
            self._held.discard(migration_uuid)
            if self._release:
                await asyncio.shield(self.leases.release(migration_uuid))

    async def wait_idle(self) -> None:
        while any(not t.done() for t in self._tasks.values()):
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def stop(self, release: bool = True) -> None:
        self._release = release
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def run(self, migration_uuid: str) -> None:
        failures = transient = 0
        while True:
            loaded = await load(self.ctx, migration_uuid)
            state = State(loaded.mig.state)
            if state in RESTING:
                return
            try:
                await STEPS[state](self.ctx, loaded)
                failures = transient = 0
            except asyncio.CancelledError:
                raise
            except ConcurrentUpdate:
                continue  # someone else moved it on; look again
            except Exception as exc:
                if is_transient(exc) and transient < MAX_TRANSIENT_RETRIES:
                    # E.g. a deadlock between two claims, each holding its source
                    # provider and wanting the other's: the transaction rolled back
                    # whole, so the same step runs again after a short random pause.
                    transient += 1
                    await asyncio.sleep(random.uniform(0.05, 0.3) * transient)
                    continue
                transient = 0
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("migration %s failed in %s: %s", migration_uuid, state, error)
                if ON_FAILURE[state] == FailureAction.RETRY:
                    failures += 1
                    if failures >= self.ctx.settings.rollback_attempts:
                        await mark_unrecoverable(self.ctx, loaded, error)
                        return
                    await asyncio.sleep(min(2 ** failures, 30) * self.ctx.settings.retry_unit)
                    continue
                await record_failure(self.ctx, loaded, error)

    def recover(self, migration_uuid: str, state: State) -> None:
        """Take over an unfinished migration nobody drives, as ON_RESTART says."""
        if ON_RESTART[state] == RestartAction.WAIT:
            return
        task = self._tasks.get(migration_uuid)
        if task is not None and not task.done():
            return
        self._tasks[migration_uuid] = asyncio.create_task(
            self._leased(migration_uuid, state), name=f"migration-{migration_uuid}")
