"""The cold-migration state machine, as data.

Three tables drive every migration:

* `STATES`: for each Ferry state, what Nova shows (migration.status, the
  instance's task_state, and vm_state when the state changes it) and the
  user-facing `phase` named after the seed's steps.
* `TRANSITIONS`: `(state, event) -> state`. Nothing else may change a
  migration's state: `ferry.conductor.transitions.advance()` looks the pair up
  here and persists with compare-and-swap.
* `ON_FAILURE`: for every state with a step, whether a failure rolls the
  migration back or retries the (idempotent) step.
* `ON_RESTART`: for every non-final state, what a restarted (or a second)
  conductor does with a migration it finds there.

To add a step: add a `State` member, its row in `STATES`, the events that
enter and leave it in `TRANSITIONS`, its `ON_RESTART` action, and a step
handler in `ferry.conductor.steps` registered under the same state. The unit
tests check that every state is reachable, every non-final state has a
restart action and a handler, and every final state has no way out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    SCHEDULING = "scheduling"
    CHECKING = "checking"
    POWERING_OFF = "powering_off"
    TRANSFERRING = "transferring"
    PREPARING = "preparing"
    STARTING = "starting"
    VERIFY = "verify"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    ROLLING_BACK = "rolling_back"
    ERROR = "error"


class Event(enum.StrEnum):
    SCHEDULED = "scheduled"  # a destination was claimed
    NO_VALID_HOST = "no_valid_host"  # no candidate left
    PREFLIGHT_OK = "preflight_ok"
    PREFLIGHT_FAILED = "preflight_failed"  # try the next alternate
    POWERED_OFF = "powered_off"  # source off, dir renamed to _resize
    TRANSFERRED = "transferred"  # disks verified on the destination (or shared)
    PREPARED = "prepared"  # destination dir, base image, ports ready
    STARTED = "started"  # guest runs on the destination
    CONFIRM = "confirm"
    CONFIRMED = "confirmed"
    REVERT = "revert"
    REVERTED = "reverted"
    FAIL = "fail"  # any step failed: undo
    ROLLED_BACK = "rolled_back"  # the server is back on its source


class FailureAction(enum.StrEnum):
    ROLL_BACK = "roll_back"  # fire FAIL: the ROLLING_BACK step puts the server back
    RETRY = "retry"  # the step is idempotent cleanup: try again with backoff


class RestartAction(enum.StrEnum):
    RESUME = "resume"  # run the state's step again (steps are idempotent)
    ROLL_BACK = "roll_back"  # fire FAIL, then run the rollback step
    WAIT = "wait"  # a stable state waiting for the user (VERIFY_RESIZE)


@dataclass(frozen=True)
class StateInfo:
    phase: str  # Ferry's plain-words step name
    status: str  # Nova migration.status
    task_state: str | None  # instance task_state while in this state
    # vm_state to set on entry; "old" restores the state from before the move.
    vm_state: str | None = None
    final: bool = False


STATES: dict[State, StateInfo] = {
    State.SCHEDULING: StateInfo("scheduling", "pre-migrating", "resize_prep"),
    State.CHECKING: StateInfo("checking", "pre-migrating", "resize_prep"),
    State.POWERING_OFF: StateInfo("powering-off", "migrating", "resize_migrating"),
    State.TRANSFERRING: StateInfo("transferring", "migrating", "resize_migrating"),
    State.PREPARING: StateInfo("preparing", "post-migrating", "resize_finish"),
    State.STARTING: StateInfo("starting", "post-migrating", "resize_finish"),
    State.VERIFY: StateInfo("verify", "finished", None, vm_state="resized"),
    State.CONFIRMING: StateInfo("cleaning-up", "confirming", None),
    State.CONFIRMED: StateInfo("done", "confirmed", None, vm_state="old", final=True),
    State.REVERTING: StateInfo("reverting", "reverting", "resize_reverting"),
    State.REVERTED: StateInfo("done", "reverted", None, vm_state="old", final=True),
    State.ROLLING_BACK: StateInfo("rolling-back", "error", "resize_reverting"),
    State.ERROR: StateInfo("failed", "error", None, vm_state="old", final=True),
}

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.SCHEDULING, Event.SCHEDULED): State.CHECKING,
    (State.SCHEDULING, Event.NO_VALID_HOST): State.ERROR,
    (State.SCHEDULING, Event.FAIL): State.ROLLING_BACK,
    (State.CHECKING, Event.PREFLIGHT_OK): State.POWERING_OFF,
    (State.CHECKING, Event.PREFLIGHT_FAILED): State.SCHEDULING,
    (State.CHECKING, Event.FAIL): State.ROLLING_BACK,
    (State.POWERING_OFF, Event.POWERED_OFF): State.TRANSFERRING,
    (State.POWERING_OFF, Event.FAIL): State.ROLLING_BACK,
    (State.TRANSFERRING, Event.TRANSFERRED): State.PREPARING,
    (State.TRANSFERRING, Event.FAIL): State.ROLLING_BACK,
    (State.PREPARING, Event.PREPARED): State.STARTING,
    (State.PREPARING, Event.FAIL): State.ROLLING_BACK,
    (State.STARTING, Event.STARTED): State.VERIFY,
    (State.STARTING, Event.FAIL): State.ROLLING_BACK,
    (State.VERIFY, Event.CONFIRM): State.CONFIRMING,
    (State.VERIFY, Event.REVERT): State.REVERTING,
    (State.CONFIRMING, Event.CONFIRMED): State.CONFIRMED,
    (State.REVERTING, Event.REVERTED): State.REVERTED,
    (State.ROLLING_BACK, Event.ROLLED_BACK): State.ERROR,
}

ON_RESTART: dict[State, RestartAction] = {
    # Nothing on any host was touched yet: picking a host again is safe.
    State.SCHEDULING: RestartAction.RESUME,
    State.CHECKING: RestartAction.RESUME,
    # The guest may be half shut down: put it back on its source rather than
    # guess how far the step got.
    State.POWERING_OFF: RestartAction.ROLL_BACK,
    # The guest is off and its disks are safe in <uuid>_resize; the transfer is
    # resumable (same token on the migration row, so the destination keeps the
    # grant and the journal of its partial files): finish sending what is missing.
    State.TRANSFERRING: RestartAction.RESUME,
    State.PREPARING: RestartAction.ROLL_BACK,
    State.STARTING: RestartAction.ROLL_BACK,
    State.VERIFY: RestartAction.WAIT,
    # Confirm and revert are idempotent on the hosts: finish them.
    State.CONFIRMING: RestartAction.RESUME,
    State.REVERTING: RestartAction.RESUME,
    State.ROLLING_BACK: RestartAction.RESUME,
}

# What the runner does when a state's step raises.
ON_FAILURE: dict[State, FailureAction] = {
    State.SCHEDULING: FailureAction.ROLL_BACK,
    State.CHECKING: FailureAction.ROLL_BACK,
    State.POWERING_OFF: FailureAction.ROLL_BACK,
    State.TRANSFERRING: FailureAction.ROLL_BACK,
    State.PREPARING: FailureAction.ROLL_BACK,
    State.STARTING: FailureAction.ROLL_BACK,
    # The user already decided; the source (confirm) or destination (revert)
    # copy must not be half removed, so the cleanup is finished, not undone.
    State.CONFIRMING: FailureAction.RETRY,
    State.REVERTING: FailureAction.RETRY,
    State.ROLLING_BACK: FailureAction.RETRY,
}

INITIAL = State.SCHEDULING
FINAL = frozenset(s for s, info in STATES.items() if info.final)
# States in which the source's disks are already renamed to <uuid>_resize
# and the guest is off: a rollback must restore and restart it.
SOURCE_TOUCHED = frozenset(
    {State.POWERING_OFF, State.TRANSFERRING, State.PREPARING, State.STARTING}
)


class InvalidTransition(Exception):
    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"event '{event}' is not allowed in state '{state}'")
        self.state = state
        self.event = event


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
