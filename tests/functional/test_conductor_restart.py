"""A conductor that stops in the middle of any step, and a new one that starts:
it resumes or rolls back by the restart table, and a step the old conductor
sent that arrives late is refused by the host instead of undoing the rollback."""

from __future__ import annotations

import asyncio

import pytest

from ferry.bus.catalogue import compute_topic
from ferry.bus.memory import MemoryBus
from ferry.conductor.manager import ConductorEndpoint
from ferry.conductor.states import ON_RESTART, RestartAction, State
from tests.support import invariants
from tests.support.cloud import Cloud

CASES = [
    # state in which the conductor dies, the host call in flight, host side
    ("checking", "check_can_migrate_to", "dest", None),
    ("powering_off", "power_off_for_migration", "source", None),
    ("transferring", "send_disks", "source", None),
    ("preparing", "prepare_migrated_instance", "dest", None),
    ("starting", "finish_migration", "dest", None),
    ("confirming", "confirm_migration", "source", "confirmResize"),
    ("reverting", "revert_migration", "dest", "revertResize"),
]


async def _wait_state(cloud: Cloud, sid: str, state: str, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        migs = await cloud.migrations(sid)
        if migs and migs[0]["state"] == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached {state}")


@pytest.mark.parametrize(("state", "method", "side", "decision"), CASES,
                         ids=[c[0] for c in CASES])
async def test_conductor_restart_in_every_state(cloud: Cloud, state: str, method: str,
                                                side: str, decision: str | None) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    dest = next(c.host for c in cloud.cloud.computes if c.host != src)
    bus = cloud.cloud.bus
    assert isinstance(bus, MemoryBus)
    gate = bus.hold(compute_topic(src if side == "source" else dest), method)

    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    if decision:
        await cloud.wait_status(sid, "VERIFY_RESIZE")
        await cloud.action(sid, {decision: None})
    await _wait_state(cloud, sid, state)
    await asyncio.wait_for(gate.reached.wait(), 10)  # the step is in flight

    # The conductor dies with the host call in flight; a new one starts.
    old = cloud.cloud.conductor
    await old.stop()
    new = ConductorEndpoint.create(cloud.cloud.sessions, bus, cloud.cloud.cfg.settings)
    cloud.cloud.conductor = new
    await new.start()
    await new.wait_idle()
    gate.released.set()  # the old conductor's message finally runs (or is refused)
    await asyncio.sleep(0.1)
    await new.wait_idle()

    [mig] = await cloud.migrations(sid)
    action = ON_RESTART[State(state)]
    if action == RestartAction.ROLL_BACK:
        s = await cloud.wait_status(sid, "ACTIVE")
        assert s["OS-EXT-SRV-ATTR:host"] == src
        assert mig["status"] == "error" and "interrupted" in mig["error"]
    elif decision == "confirmResize":
        s = await cloud.wait_status(sid, "ACTIVE")
        assert s["OS-EXT-SRV-ATTR:host"] == dest and mig["status"] == "confirmed"
    elif decision == "revertResize":
        s = await cloud.wait_status(sid, "ACTIVE")
        assert s["OS-EXT-SRV-ATTR:host"] == src and mig["status"] == "reverted"
    else:
        s = await cloud.wait_status(sid, "VERIFY_RESIZE")
        assert mig["status"] == "finished"
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)
