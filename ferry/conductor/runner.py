"""Drive one migration through its states until it rests (final or VERIFY).

The runner is the only caller of the step handlers. When a step raises it
does what `ON_FAILURE` says: fire FAIL (the rollback step then runs), retry
the same step after a short random pause when the database error was
transient (`is_transient`: deadlock, lock, pool checkout timeout), or retry
the idempotent step with backoff; after `rollback_attempts` retries it marks
the server ERROR with a fault saying where its copy is, and leaves the
migration where it is for a restarted conductor to resume.

At most `Settings.max_migrations_in_flight` migrations run at once per
conductor (0 = no limit). Every step opens short transactions on the
conductor's pool (10 + 20 connections); with hundreds of migrations running
at once checkouts wait past the pool timeout and steps fail (the scale
benchmark: 500 at once, 63 % rolled back; 25 at a time, all succeeded). The
others wait in `Slots`, first come first served, in the state they are in
(`scheduling` for a new request, `confirming`/`reverting` for the user's
answer), listed by `waiting()`.

A waiting migration does not hold its lease: the lease is taken once a slot
is free, just before the first step. Nothing has been done to it here yet,
so there is nothing to fence, and leaving it unowned keeps takeover correct
and useful: another conductor's periodic `recover()` sees it as an orphan
and may drive it (the lease compare-and-swap lets one conductor win); when
our turn comes `acquire` fails and we drop it, or it already rests and
`run` returns at once. If this conductor dies, its waiting migrations are
taken over at once instead of after the lease expires, and lease renewal
never has to count (or renew) migrations that are only queued. Holding the
lease while queued would instead pin up to hundreds of migrations to a
conductor that cannot run them, each renewed every `lease_renew_interval`.

To change the order (e.g. confirms before new requests), change
`Slots.take`'s queue; the cap itself is the only knob operators get.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ferry.conductor.context import StepContext, load
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
from ferry.conductor.steps import STEPS, mark_unrecoverable, record_failure
from ferry.conductor.transitions import ConcurrentUpdate, advance
from ferry.db.session import is_transient

log = logging.getLogger(__name__)

RESTING = FINAL | {State.VERIFY}
MAX_TRANSIENT_RETRIES = 10
T = TypeVar("T")


async def patiently(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run the runner's own bookkeeping (loading the row, recording a failure),
    or any other unit of work that is safe to repeat, retrying transient
    database errors: if it gave up, the task would end with
    the migration unowned mid-step, and recovery would roll it back as after a
    crash (the scale benchmark's "interrupted while ..." failures)."""
    for attempt in range(1, MAX_TRANSIENT_RETRIES + 1):
        try:
            return await fn(*args)
        except Exception as exc:
            if not is_transient(exc) or attempt == MAX_TRANSIENT_RETRIES:
                raise
            await _transient_pause(attempt)
    raise AssertionError("unreachable")


async def _transient_pause(attempt: int) -> None:
    """Before retrying a transient database error: short, random (so two
    deadlocked transactions do not collide again), longer each attempt."""
    await asyncio.sleep(random.uniform(0.05, 0.3) * attempt)


class Slots:
    """A FIFO counting limit keyed by migration: `take` waits in request order
    (asyncio.Semaphore does not promise the order, nor list its waiters)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap  # <= 0: no limit
        self.busy = 0
        self._waiters: OrderedDict[str, asyncio.Future[None]] = OrderedDict()

    def waiting(self) -> list[str]:
        return list(self._waiters)

    async def take(self, key: str) -> None:
        if self.cap <= 0 or (self.busy < self.cap and not self._waiters):
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot as we were cancelled: pass it on
            raise
        finally:
            if self._waiters.get(key) is fut:
                del self._waiters[key]

    def give(self) -> None:
        """Hand the slot to the first waiter (busy stays the same) or free it."""
        while self._waiters:
            _, fut = self._waiters.popitem(last=False)
            if not fut.done():
                fut.set_result(None)
                return
        self.busy -= 1


class MigrationRunner:
    def __init__(self, ctx: StepContext, leases: Leases) -> None:
        self.ctx = ctx
        self.leases = leases
        self.slots = Slots(ctx.settings.max_migrations_in_flight)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()
        self._release = True

    def running(self) -> list[str]:
        """Migrations with a task here: driven now, or waiting for a slot."""
        return [u for u, t in self._tasks.items() if not t.done()]

    def waiting(self) -> list[str]:
        """Migrations queued for a slot, in the order they will run."""
        return self.slots.waiting()

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
        if self.slots.cap > 0 and self.slots.busy >= self.slots.cap:
            log.info("migration %s waits: %d in flight (max_migrations_in_flight), "
                     "%d queued", migration_uuid, self.slots.busy,
                     len(self.slots.waiting()) + 1)
        await self.slots.take(migration_uuid)
        try:
            await self._drive(migration_uuid, recover_from)
        finally:
            self.slots.give()

    async def _drive(self, migration_uuid: str, recover_from: State | None) -> None:
        if not await self.leases.acquire(migration_uuid):
            log.info("migration %s is driven by another conductor", migration_uuid)
            return
        self._held.add(migration_uuid)
        try:
            if recover_from is not None and \
                    ON_RESTART[recover_from] == RestartAction.ROLL_BACK:
                # Another conductor may have driven it on while this one waited
                # for a slot: then carry on from wherever it is now.
                with contextlib.suppress(ConcurrentUpdate):
                    await advance(self.ctx.sessions, migration_uuid, Event.FAIL,
                                  expect=recover_from,
                                  note=f"conductor restarted while {recover_from}: "
                                       "rolling back",
                                  migration_fields={"error":
                                                    f"interrupted while {recover_from}"})
            await self.run(migration_uuid)
        finally:
            # Before the release: `renew_leases` takes a lease that is no longer
            # ours but still in `holding()` for one taken over.
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
            loaded = await patiently(load, self.ctx, migration_uuid)
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
                    await _transient_pause(transient)
                    continue
                transient = 0
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("migration %s failed in %s: %s", migration_uuid, state, error)
                if ON_FAILURE[state] == FailureAction.RETRY:
                    failures += 1
                    if failures >= self.ctx.settings.rollback_attempts:
                        await patiently(mark_unrecoverable, self.ctx, loaded, error)
                        return
                    await asyncio.sleep(min(2 ** failures, 30) * self.ctx.settings.retry_unit)
                    continue
                await patiently(record_failure, self.ctx, loaded, error)

    def recover(self, migration_uuid: str, state: State) -> None:
        """Take over an unfinished migration nobody drives, as ON_RESTART says."""
        if ON_RESTART[state] == RestartAction.WAIT:
            return
        task = self._tasks.get(migration_uuid)
        if task is not None and not task.done():
            return
        self._tasks[migration_uuid] = asyncio.create_task(
            self._leased(migration_uuid, state), name=f"migration-{migration_uuid}")
