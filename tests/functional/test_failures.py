"""A failure injected at every step of the state table; after each, the invariants.

Failures come from the two fakes: the in-memory bus (a host that fails a step,
or whose reply is lost after it did the work) and the fake driver (the
hypervisor failing inside a step).
"""

from __future__ import annotations

import pytest

from ferry.bus.catalogue import compute_topic
from ferry.bus.memory import MemoryBus
from tests.support import invariants
from tests.support.cloud import Cloud

# (state whose step fails, method, which host) for every step that calls a host.
FORWARD_FAILURES = [
    ("checking", "check_can_migrate_to", "dest"),
    ("checking", "check_data_plane", "source"),
    ("powering_off", "power_off_for_migration", "source"),
    ("transferring", "expect_transfer", "dest"),
    ("transferring", "send_disks", "source"),
    ("preparing", "prepare_migrated_instance", "dest"),
    ("starting", "finish_migration", "dest"),
]


def _bus(cloud: Cloud) -> MemoryBus:
    bus = cloud.cloud.bus
    assert isinstance(bus, MemoryBus)
    return bus


def _other(cloud: Cloud, host: str) -> str:
    return next(c.host for c in cloud.cloud.computes if c.host != host)


# A send whose answer was lost is vouched for by the destination and goes on
# (test_send_disks_answer_lost_goes_on); every other lost answer rolls back.
ROLLED_BACK = [(s, m, side, after) for s, m, side in FORWARD_FAILURES for after in (False, True)
               if not (m == "send_disks" and after)]


@pytest.mark.parametrize(("state", "method", "side", "after"), ROLLED_BACK,
                         ids=[f"{s}-{m}-{'reply-lost' if a else 'fails'}"
                              for s, m, _, a in ROLLED_BACK])
async def test_forward_step_failure_rolls_back(cloud: Cloud, state: str, method: str,
                                               side: str, after: bool) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    target = src if side == "source" else _other(cloud, src)
    _bus(cloud).inject_failure(compute_topic(target), method, "boom", after=after)

    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error"
    assert "boom" in (mig["error"] or "") or any("boom" in st.get("note", "")
                                                for st in mig["steps"])
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)
    # The failure is visible where Nova shows it: the instance action's events.
    r = await cloud.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions")
    migrate_action = next(a for a in r.json()["instanceActions"] if a["action"] == "migrate")
    r = await cloud.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/"
                            f"{migrate_action['request_id']}")
    events = r.json()["instanceAction"]["events"]
    assert any(e["result"] == "Error" for e in events), events
    assert r.json()["instanceAction"]["message"] == "Error"
    # And the server can still be migrated afterwards.
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    await invariants.check(cloud.cloud, sid)


async def test_send_disks_answer_lost_goes_on(cloud: Cloud) -> None:
    """The source sent everything but its answer was lost: the destination holds
    the verified files under the migration's grant, so the migration goes on
    instead of rolling back and sending it all again later."""
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    _bus(cloud).inject_failure(compute_topic(src), "send_disks", "boom", after=True)
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    [mig] = await cloud.migrations(sid)
    assert any(st.get("note") == "disks already verified on the destination"
               for st in mig["steps"]), mig["steps"]
    await invariants.check(cloud.cloud, sid)
    assert (await cloud.action(sid, {"confirmResize": None})).status_code == 204
    await cloud.wait_status(sid, "ACTIVE")
    await invariants.total_usage_matches(cloud.cloud)


@pytest.mark.parametrize("fault", ["power_off", "finish_migration"])
async def test_hypervisor_failure_inside_a_step(cloud: Cloud, fault: str) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    host = src if fault == "power_off" else _other(cloud, src)
    cloud.cloud.compute(host).driver.faults.fail_once[fault] = "hypervisor says no"  # type: ignore[attr-defined]
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    assert "boot=" in await cloud.console(sid)
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)


@pytest.mark.parametrize(("decision", "method", "side"), [
    ("confirmResize", "confirm_migration", "source"),
    ("revertResize", "revert_migration", "dest"),
    ("revertResize", "finish_revert_migration", "source"),
])
async def test_cleanup_failure_is_retried(cloud: Cloud, decision: str, method: str,
                                          side: str) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    dest = s["OS-EXT-SRV-ATTR:host"]
    _bus(cloud).inject_failure(compute_topic(src if side == "source" else dest), method)
    await cloud.action(sid, {decision: None})
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == (dest if decision == "confirmResize" else src)
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == ("confirmed" if decision == "confirmResize" else "reverted")
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)


async def test_rollback_failure_is_retried(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    bus = _bus(cloud)
    bus.inject_failure(compute_topic(_other(cloud, src)), "finish_migration")
    bus.inject_failure(compute_topic(src), "finish_revert_migration")
    await cloud.action(sid, {"migrate": None})
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    await invariants.check(cloud.cloud, sid)


async def test_rollback_that_keeps_failing_sets_error_and_keeps_the_copy(cloud: Cloud
                                                                         ) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    bus = _bus(cloud)
    bus.inject_failure(compute_topic(_other(cloud, src)), "finish_migration")
    for _ in range(cloud.cloud.cfg.settings.rollback_attempts):
        bus.inject_failure(compute_topic(src), "finish_revert_migration")
    await cloud.action(sid, {"migrate": None})
    await cloud.settle()
    s = await cloud.server(sid)
    assert s["status"] == "ERROR"
    assert "kept" in s["fault"]["details"] or "intact" in s["fault"]["details"]
    await invariants.check(cloud.cloud, sid)
    # A restarted conductor resumes the rollback and the server comes back.
    await cloud.cloud.conductor.recover()
    await cloud.settle()
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error" and mig["state"] == "error"
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    await invariants.check(cloud.cloud, sid)
