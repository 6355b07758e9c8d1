"""The migration state machine as data (`ferry.conductor.states`), its step
handlers (`ferry.conductor.steps.STEPS`) and `advance()` against a real SQLite
database made by the project's Alembic migrations."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.conductor.states import (
    FINAL,
    INITIAL,
    ON_FAILURE,
    ON_RESTART,
    SOURCE_TOUCHED,
    STATES,
    TRANSITIONS,
    Event,
    FailureAction,
    InvalidTransition,
    RestartAction,
    State,
    next_state,
)
from ferry.conductor.steps import STEPS
from ferry.conductor.transitions import ConcurrentUpdate, advance, advance_in
from ferry.db.models import Flavor, Instance, Migration

NON_FINAL = [s for s in State if s not in FINAL]

# -- the tables ----------------------------------------------------------------------


def test_every_state_is_described() -> None:
    assert set(STATES) == set(State)
    assert {State.CONFIRMED, State.REVERTED, State.ERROR} == FINAL
    assert INITIAL == State.SCHEDULING


def test_every_state_is_reachable_from_initial() -> None:
    seen = {INITIAL}
    todo = deque([INITIAL])
    while todo:
        here = todo.popleft()
        for (src, _event), dst in TRANSITIONS.items():
            if src == here and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    assert seen == set(State)


def test_every_non_final_state_can_still_end() -> None:
    """No dead ends: from every state some path leads to a final state."""
    can_end = set(FINAL)
    changed = True
    while changed:
        changed = False
        for (src, _event), dst in TRANSITIONS.items():
            if dst in can_end and src not in can_end:
                can_end.add(src)
                changed = True
    assert can_end == set(State)


@pytest.mark.parametrize("state", sorted(FINAL))
def test_final_states_have_no_way_out(state: State) -> None:
    assert [e for (s, e) in TRANSITIONS if s == state] == []
    for event in Event:
        with pytest.raises(InvalidTransition):
            next_state(state, event)


def test_every_non_final_state_has_a_restart_action() -> None:
    assert set(ON_RESTART) == set(NON_FINAL)
    assert ON_RESTART[State.VERIFY] == RestartAction.WAIT


def test_every_state_with_work_has_a_step_handler() -> None:
    assert set(STEPS) == set(NON_FINAL) - {State.VERIFY}
    assert all(callable(step) for step in STEPS.values())


def test_every_step_has_a_failure_action() -> None:
    assert set(ON_FAILURE) == set(STEPS)


def test_fail_rolls_back_exactly_where_the_failure_policy_says_so() -> None:
    """FAIL leads to ROLLING_BACK from every state whose step failure is rolled
    back (scheduling ... starting). CONFIRMING and REVERTING have no FAIL on
    purpose: the user already decided and half the cleanup may be done, so
    their step is retried (ON_FAILURE RETRY) instead of undone."""
    rolled_back = {s for s, a in ON_FAILURE.items() if a == FailureAction.ROLL_BACK}
    assert rolled_back == {State.SCHEDULING, State.CHECKING, State.POWERING_OFF,
                           State.TRANSFERRING, State.PREPARING, State.STARTING}
    for state in NON_FINAL:
        if state in rolled_back:
            assert TRANSITIONS.get((state, Event.FAIL)) == State.ROLLING_BACK, state
        else:
            assert (state, Event.FAIL) not in TRANSITIONS, state
    assert {s for s in NON_FINAL if (s, Event.FAIL) not in TRANSITIONS} == {
        State.VERIFY, State.CONFIRMING, State.REVERTING, State.ROLLING_BACK}


def test_restart_roll_back_is_only_used_where_fail_is_allowed() -> None:
    """A restarted conductor fires FAIL for ROLL_BACK states: the table must allow it."""
    for state, action in ON_RESTART.items():
        if action == RestartAction.ROLL_BACK:
            assert (state, Event.FAIL) in TRANSITIONS, state


def test_states_that_touched_the_source_roll_back_on_restart_except_the_transfer() -> None:
    """A restart cannot tell how far a power-off or a start on the destination
    got, so those roll back; the transfer is resumable (same grant, journal on
    the destination), so a restarted conductor finishes it."""
    assert ON_RESTART[State.TRANSFERRING] == RestartAction.RESUME
    assert all(ON_RESTART[s] == RestartAction.ROLL_BACK
               for s in SOURCE_TOUCHED - {State.TRANSFERRING})


def test_rolling_back_only_ends_in_error() -> None:
    assert {e: d for (s, e), d in TRANSITIONS.items() if s == State.ROLLING_BACK} == {
        Event.ROLLED_BACK: State.ERROR}


def test_the_user_decides_in_verify() -> None:
    assert next_state(State.VERIFY, Event.CONFIRM) == State.CONFIRMING
    assert next_state(State.VERIFY, Event.REVERT) == State.REVERTING
    assert next_state(State.CONFIRMING, Event.CONFIRMED) == State.CONFIRMED
    assert next_state(State.REVERTING, Event.REVERTED) == State.REVERTED


def test_happy_path() -> None:
    path = [Event.SCHEDULED, Event.PREFLIGHT_OK, Event.POWERED_OFF, Event.TRANSFERRED,
            Event.PREPARED, Event.STARTED, Event.CONFIRM, Event.CONFIRMED]
    state = INITIAL
    visited = [state]
    for event in path:
        state = next_state(state, event)
        visited.append(state)
    assert visited == [State.SCHEDULING, State.CHECKING, State.POWERING_OFF,
                       State.TRANSFERRING, State.PREPARING, State.STARTING, State.VERIFY,
                       State.CONFIRMING, State.CONFIRMED]


def test_preflight_failure_goes_back_to_scheduling_and_no_host_ends_in_error() -> None:
    assert next_state(State.CHECKING, Event.PREFLIGHT_FAILED) == State.SCHEDULING
    assert next_state(State.SCHEDULING, Event.NO_VALID_HOST) == State.ERROR


# (status, task_state, vm_state on entry) as DESIGN.md section 2 and Nova show them.
NOVA_VIEW: dict[State, tuple[str, str | None, str | None]] = {
    State.SCHEDULING: ("pre-migrating", "resize_prep", None),
    State.CHECKING: ("pre-migrating", "resize_prep", None),
    State.POWERING_OFF: ("migrating", "resize_migrating", None),
    State.TRANSFERRING: ("migrating", "resize_migrating", None),
    State.PREPARING: ("post-migrating", "resize_finish", None),
    State.STARTING: ("post-migrating", "resize_finish", None),
    State.VERIFY: ("finished", None, "resized"),
    State.CONFIRMING: ("confirming", None, None),
    State.CONFIRMED: ("confirmed", None, "old"),
    State.REVERTING: ("reverting", "resize_reverting", None),
    State.REVERTED: ("reverted", None, "old"),
    State.ROLLING_BACK: ("error", "resize_reverting", None),
    State.ERROR: ("error", None, "old"),
}

PHASES = {
    State.SCHEDULING: "scheduling", State.CHECKING: "checking",
    State.POWERING_OFF: "powering-off", State.TRANSFERRING: "transferring",
    State.PREPARING: "preparing", State.STARTING: "starting", State.VERIFY: "verify",
    State.CONFIRMING: "cleaning-up", State.CONFIRMED: "done", State.REVERTING: "reverting",
    State.REVERTED: "done", State.ROLLING_BACK: "rolling-back", State.ERROR: "failed",
}


@pytest.mark.parametrize("state", list(State))
def test_nova_view_of_each_state(state: State) -> None:
    info = STATES[state]
    assert (info.status, info.task_state, info.vm_state) == NOVA_VIEW[state]
    assert info.phase == PHASES[state]
    assert info.final == (state in {State.CONFIRMED, State.REVERTED, State.ERROR})


def test_pairs_outside_the_table_are_invalid() -> None:
    invalid = [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS]
    assert len(invalid) == len(State) * len(Event) - len(TRANSITIONS)
    for state, event in invalid:
        with pytest.raises(InvalidTransition) as err:
            next_state(state, event)
        assert (err.value.state, err.value.event) == (state, event)
        assert event.value in str(err.value) and state.value in str(err.value)


def test_invalid_transition_message_names_plain_values() -> None:
    with pytest.raises(InvalidTransition) as err:
        next_state(State.SCHEDULING, Event.STARTED)
    assert str(err.value) == "event 'started' is not allowed in state 'scheduling'"


# -- advance() on a real database ----------------------------------------------------------


@dataclass
class Ids:
    migration: str
    instance: str


async def _make(sessions: async_sessionmaker[AsyncSession], old_vm_state: str | None = "active",
                state: State = State.SCHEDULING) -> Ids:
    ids = Ids(str(uuidlib.uuid4()), str(uuidlib.uuid4()))
    info = STATES[state]
    async with sessions() as s, s.begin():
        flavor = Flavor(flavorid=f"f-{ids.instance}", name=f"small-{ids.instance}", vcpus=1,
                        memory_mb=512, root_gb=1)
        s.add(flavor)
        await s.flush()
        s.add(Instance(uuid=ids.instance, display_name="vm", project_id="p", user_id="u",
                       host="host1", node="host1", vm_state=old_vm_state or "active",
                       task_state=info.task_state, flavor_id=flavor.id, image_ref="img"))
        s.add(Migration(uuid=ids.migration, instance_uuid=ids.instance, state=state.value,
                        status=info.status, phase=info.phase, source_compute="host1",
                        old_vm_state=old_vm_state))
    return ids


async def _load(sessions: async_sessionmaker[AsyncSession],
                ids: Ids) -> tuple[Migration, Instance]:
    async with sessions() as s:
        mig = (await s.execute(select(Migration).where(Migration.uuid == ids.migration))
               ).scalar_one()
        inst = (await s.execute(select(Instance).where(Instance.uuid == ids.instance))
                ).scalar_one()
        return mig, inst


async def _walk(sessions: async_sessionmaker[AsyncSession], ids: Ids, *events: Event) -> None:
    for event in events:
        await advance(sessions, ids.migration, event)


TO_VERIFY = (Event.SCHEDULED, Event.PREFLIGHT_OK, Event.POWERED_OFF, Event.TRANSFERRED,
             Event.PREPARED, Event.STARTED)


async def test_advance_moves_state_and_records_it(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    returned = await advance(sessions, ids.migration, Event.SCHEDULED, note="destination h2",
                             migration_fields={"dest_compute": "h2"})
    assert returned.state == "checking"
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.status, mig.phase) == ("checking", "pre-migrating", "checking")
    assert mig.generation == 1
    assert mig.dest_compute == "h2"
    assert len(mig.steps) == 1
    entry = mig.steps[0]
    assert {k: entry[k] for k in ("state", "phase", "event", "note")} == {
        "state": "checking", "phase": "checking", "event": "scheduled",
        "note": "destination h2"}
    assert entry["at"].endswith("Z")
    at = dt.datetime.fromisoformat(entry["at"].removesuffix("Z"))
    assert before <= at <= dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert inst.task_state == "resize_prep"
    assert inst.vm_state == "active"


async def test_advance_sets_the_instance_task_state_of_the_new_state(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions)
    await _walk(sessions, ids, Event.SCHEDULED, Event.PREFLIGHT_OK)
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.status) == ("powering_off", "migrating")
    assert inst.task_state == "resize_migrating"
    await advance(sessions, ids.migration, Event.POWERED_OFF,
                  instance_fields={"power_state": 4})
    await advance(sessions, ids.migration, Event.TRANSFERRED)
    mig, inst = await _load(sessions, ids)
    assert (mig.status, inst.task_state, inst.power_state) == (
        "post-migrating", "resize_finish", 4)
    assert mig.generation == 4
    assert [e["event"] for e in mig.steps] == [
        "scheduled", "preflight_ok", "powered_off", "transferred"]


async def test_invalid_event_changes_nothing(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions)
    with pytest.raises(InvalidTransition):
        await advance(sessions, ids.migration, Event.STARTED)
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.generation, mig.steps) == ("scheduling", 0, [])
    assert (inst.vm_state, inst.task_state) == ("active", "resize_prep")


async def test_expect_mismatch_is_concurrent_update_and_changes_nothing(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions)
    with pytest.raises(ConcurrentUpdate):
        await advance(sessions, ids.migration, Event.FAIL, expect=State.CHECKING)
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.generation, mig.steps) == ("scheduling", 0, [])
    assert inst.task_state == "resize_prep"
    await advance(sessions, ids.migration, Event.SCHEDULED, expect=State.SCHEDULING)
    assert (await _load(sessions, ids))[0].state == "checking"


@pytest.mark.parametrize("racers", [2, 8])
async def test_concurrent_advances_exactly_one_wins(
        sessions: async_sessionmaker[AsyncSession], racers: int) -> None:
    ids = await _make(sessions)
    results = await asyncio.gather(
        *(advance(sessions, ids.migration, Event.SCHEDULED) for _ in range(racers)),
        return_exceptions=True)
    winners = [r for r in results if isinstance(r, Migration)]
    losers = [r for r in results if not isinstance(r, Migration)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrentUpdate | InvalidTransition) for r in losers), losers
    mig, _ = await _load(sessions, ids)
    assert mig.state == "checking"
    assert mig.generation == 1
    assert len(mig.steps) == 1


async def test_concurrent_different_events_exactly_one_wins(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """A user's revert racing the conductor's own event: one of them, not both."""
    ids = await _make(sessions)
    await _walk(sessions, ids, *TO_VERIFY)
    results = await asyncio.gather(
        advance(sessions, ids.migration, Event.CONFIRM, expect=State.VERIFY),
        advance(sessions, ids.migration, Event.REVERT, expect=State.VERIFY),
        return_exceptions=True)
    assert sum(isinstance(r, Migration) for r in results) == 1
    mig, _ = await _load(sessions, ids)
    assert mig.state in ("confirming", "reverting")
    assert len(mig.steps) == len(TO_VERIFY) + 1


async def test_advance_in_rolls_back_with_the_callers_transaction(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions)
    with pytest.raises(RuntimeError):
        async with sessions() as s, s.begin():
            await advance_in(s, ids.migration, Event.SCHEDULED)
            raise RuntimeError("the claim written with it failed")
    mig, _ = await _load(sessions, ids)
    assert (mig.state, mig.generation, mig.steps) == ("scheduling", 0, [])


async def test_reaching_verify_marks_the_server_resized(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions)
    await _walk(sessions, ids, *TO_VERIFY)
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.status, mig.phase) == ("verify", "finished", "verify")
    assert (inst.vm_state, inst.task_state) == ("resized", None)


@pytest.mark.parametrize("old", ["active", "stopped"])
async def test_confirmed_restores_the_vm_state_from_before(
        sessions: async_sessionmaker[AsyncSession], old: str) -> None:
    ids = await _make(sessions, old_vm_state=old)
    await _walk(sessions, ids, *TO_VERIFY, Event.CONFIRM)
    mig, inst = await _load(sessions, ids)
    assert (mig.status, inst.vm_state, inst.task_state) == ("confirming", "resized", None)
    await advance(sessions, ids.migration, Event.CONFIRMED)
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.status, mig.phase) == ("confirmed", "confirmed", "done")
    assert (inst.vm_state, inst.task_state) == (old, None)


@pytest.mark.parametrize("old", ["active", "stopped"])
async def test_reverted_restores_the_vm_state_from_before(
        sessions: async_sessionmaker[AsyncSession], old: str) -> None:
    ids = await _make(sessions, old_vm_state=old)
    await _walk(sessions, ids, *TO_VERIFY, Event.REVERT)
    mig, inst = await _load(sessions, ids)
    assert (mig.status, inst.task_state) == ("reverting", "resize_reverting")
    await advance(sessions, ids.migration, Event.REVERTED)
    mig, inst = await _load(sessions, ids)
    assert (mig.status, inst.vm_state, inst.task_state) == ("reverted", old, None)


@pytest.mark.parametrize("old", ["active", "stopped"])
async def test_failure_rolls_back_and_ends_with_the_server_as_before(
        sessions: async_sessionmaker[AsyncSession], old: str) -> None:
    ids = await _make(sessions, old_vm_state=old)
    await _walk(sessions, ids, Event.SCHEDULED, Event.PREFLIGHT_OK, Event.POWERED_OFF)
    await advance(sessions, ids.migration, Event.FAIL, note="disk copy failed",
                  migration_fields={"error": "disk copy failed"})
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.status, mig.error) == ("rolling_back", "error", "disk copy failed")
    assert inst.task_state == "resize_reverting"
    await advance(sessions, ids.migration, Event.ROLLED_BACK)
    mig, inst = await _load(sessions, ids)
    assert (mig.state, mig.status, mig.phase) == ("error", "error", "failed")
    assert (inst.vm_state, inst.task_state) == (old, None)


async def test_no_valid_host_leaves_the_server_as_it_was(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions, old_vm_state="stopped")
    await advance(sessions, ids.migration, Event.NO_VALID_HOST)
    mig, inst = await _load(sessions, ids)
    assert (mig.status, inst.vm_state, inst.task_state) == ("error", "stopped", None)


async def test_unknown_old_vm_state_restores_active(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _make(sessions, old_vm_state=None)
    await advance(sessions, ids.migration, Event.NO_VALID_HOST)
    _, inst = await _load(sessions, ids)
    assert inst.vm_state == "active"


async def test_advance_only_touches_its_own_migration_and_instance(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    mine, other = await _make(sessions), await _make(sessions)
    await _walk(sessions, mine, *TO_VERIFY)
    mig, inst = await _load(sessions, other)
    assert (mig.state, mig.generation, inst.vm_state, inst.task_state) == (
        "scheduling", 0, "active", "resize_prep")
