"""The whole cold migration through the API, conductor and two fake hosts."""

from __future__ import annotations

from tests.support.cloud import Cloud


async def test_migrate_confirm_moves_server_and_disk(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    assert "boot=1 payload=ok" in await cloud.console(sid)

    r = await cloud.action(sid, {"migrate": None})
    assert r.status_code == 202
    # task_state is set before the 202, so pollers never see a stale ACTIVE.
    assert (await cloud.server(sid))["OS-EXT-STS:task_state"] in (
        "resize_prep", "resize_migrating", "resize_finish", None)
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    dest = s["OS-EXT-SRV-ATTR:host"]
    assert dest != src
    assert f"id={sid} boot=2 payload=ok" in await cloud.console(sid)
    src_mgr = cloud.cloud.compute(src)
    assert src_mgr.store.resize_path(sid).exists()  # kept until confirm

    r = await cloud.action(sid, {"confirmResize": None})
    assert r.status_code == 204
    s = await cloud.wait_status(sid, "ACTIVE")
    await cloud.settle()
    assert s["OS-EXT-SRV-ATTR:host"] == dest
    assert not src_mgr.store.resize_path(sid).exists()
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "confirmed"
    phases = [st["phase"] for st in mig["steps"]]
    assert phases[:8] == ["requested", "checking", "powering-off", "transferring",
                          "preparing", "starting", "verify", "cleaning-up"]
    assert mig["downtime_s"] is not None and mig["downtime_s"] >= 0
    assert mig["bytes_total"] > 0


async def test_migrate_revert_boots_source_copy(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.action(sid, {"migrate": {}})).status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    dest = s["OS-EXT-SRV-ATTR:host"]
    assert (await cloud.action(sid, {"revertResize": None})).status_code == 202
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    # The source's own copy booted: its counter went 1 -> 2, not 2 -> 3.
    assert f"id={sid} boot=2 payload=ok" in (await cloud.console(sid)).splitlines()[-1]
    assert not cloud.cloud.compute(dest).store.path(sid).exists()
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "reverted"
