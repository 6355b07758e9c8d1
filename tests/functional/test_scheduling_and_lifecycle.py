"""Alternates, auto-confirm, shared storage, stopped servers, resize, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ferry.bus.catalogue import compute_topic
from ferry.bus.memory import MemoryBus
from tests.support import invariants
from tests.support.cloud import Cloud, start_cloud


async def test_preflight_failure_tries_the_next_candidate(cloud: Cloud) -> None:
    await cloud.cloud.add_host(3)
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    bus = cloud.cloud.bus
    assert isinstance(bus, MemoryBus)
    # host2 is the scheduler's first choice; its pre-flight fails.
    bus.inject_failure(compute_topic("host2"), "check_can_migrate_to", "disk full")
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    assert s["OS-EXT-SRV-ATTR:host"] == "host3" != src
    [mig] = await cloud.migrations(sid)
    assert [st["phase"] for st in mig["steps"]][:4] == ["requested", "checking", "scheduling",
                                                       "checking"]
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)


async def test_requested_host_preflight_failure_is_not_rescheduled(cloud: Cloud) -> None:
    await cloud.cloud.add_host(3)
    server = await cloud.boot()
    sid = server["id"]
    bus = cloud.cloud.bus
    assert isinstance(bus, MemoryBus)
    bus.inject_failure(compute_topic("host3"), "check_can_migrate_to", "disk full")
    r = await cloud.action(sid, {"migrate": {"host": "host3"}}, version="2.56")
    assert r.status_code == 202
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == "host1"
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error" and "disk full" in mig["error"]
    await invariants.check(cloud.cloud, sid)


async def test_auto_confirm_after_window(tmp_path: Path) -> None:
    ec = await start_cloud(tmp_path / "s", resize_confirm_window=0.5)
    try:
        async with httpx.AsyncClient(base_url=ec.url) as client:
            cloud = Cloud(ec, client)
            server = await cloud.boot()
            sid = server["id"]
            await cloud.action(sid, {"migrate": None})
            s = await cloud.wait_status(sid, "ACTIVE", timeout=15)
            [mig] = await cloud.migrations(sid)
            assert mig["status"] == "confirmed"
            assert any("auto-confirmed" in st.get("note", "") for st in mig["steps"])
            assert s["OS-EXT-SRV-ATTR:host"] != server["OS-EXT-SRV-ATTR:host"]
            await invariants.check(ec, sid)
    finally:
        await ec.stop()


async def test_shared_storage_is_detected_and_nothing_is_sent(tmp_path: Path) -> None:
    ec = await start_cloud(tmp_path / "s", shared_storage=True)
    try:
        async with httpx.AsyncClient(base_url=ec.url) as client:
            cloud = Cloud(ec, client)
            server = await cloud.boot()
            sid = server["id"]
            await cloud.action(sid, {"migrate": None})
            await cloud.wait_status(sid, "VERIFY_RESIZE")
            [mig] = await cloud.migrations(sid)
            assert mig["shared_storage"] is True
            assert any("shared storage" in st.get("note", "") for st in mig["steps"])
            await invariants.check(ec, sid)
            await cloud.action(sid, {"revertResize": None})
            await cloud.wait_status(sid, "ACTIVE")
            await invariants.check(ec, sid)
            assert "boot=2 payload=ok" in (await cloud.console(sid)).splitlines()[-1]
    finally:
        await ec.stop()


async def test_stopped_server_moves_and_stays_stopped(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid = server["id"]
    assert (await cloud.action(sid, {"os-stop": None})).status_code == 202
    await cloud.wait_status(sid, "SHUTOFF")
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    assert s["OS-EXT-STS:power_state"] == 4
    await cloud.action(sid, {"confirmResize": None})
    s = await cloud.wait_status(sid, "SHUTOFF")
    [mig] = await cloud.migrations(sid)
    assert mig["downtime_s"] is None  # it was never running
    await invariants.check(cloud.cloud, sid)
    assert (await cloud.action(sid, {"os-start": None})).status_code == 202
    await cloud.wait_status(sid, "ACTIVE")
    await invariants.check(cloud.cloud, sid)


async def test_resize_to_a_bigger_flavor_then_confirm(cloud: Cloud) -> None:
    server = await cloud.boot(flavor="1")
    sid = server["id"]
    r = await cloud.action(sid, {"resize": {"flavorRef": "2"}})
    assert r.status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    assert s["flavor"]["id"] == "2"
    await invariants.check(cloud.cloud, sid)
    await cloud.action(sid, {"confirmResize": None})
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["flavor"]["id"] == "2"
    await invariants.check(cloud.cloud, sid)
    r = await cloud.api.get("/compute/v2.1/os-migrations",
                            headers={"OpenStack-API-Version": "compute 2.23"})
    assert r.json()["migrations"][0]["migration_type"] == "resize"


async def test_resize_revert_restores_flavor(cloud: Cloud) -> None:
    server = await cloud.boot(flavor="1")
    sid = server["id"]
    await cloud.action(sid, {"resize": {"flavorRef": "2"}})
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    await cloud.action(sid, {"revertResize": None})
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["flavor"]["id"] == "1"
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)


async def test_delete_in_verify_resize_cleans_both_hosts(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid = server["id"]
    await cloud.action(sid, {"migrate": None})
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    r = await cloud.api.delete(f"/compute/v2.1/servers/{sid}")
    assert r.status_code == 204
    await cloud.settle()
    assert (await cloud.api.get(f"/compute/v2.1/servers/{sid}")).status_code == 404
    for c in cloud.cloud.computes:
        assert not c.store.path(sid).exists() and not c.store.resize_path(sid).exists()
    async with cloud.cloud.sessions() as s:
        from ferry.scheduler import placement

        assert await placement.usages(s) == {} or all(
            not any(v.values()) for v in (await placement.usages(s)).values())


async def test_restart_on_same_state_dir_carries_on(tmp_path: Path) -> None:
    state = tmp_path / "s"
    ec = await start_cloud(state)
    async with httpx.AsyncClient(base_url=ec.url) as client:
        cloud = Cloud(ec, client)
        server = await cloud.boot()
        sid = server["id"]
        await cloud.action(sid, {"migrate": None})
        await cloud.wait_status(sid, "VERIFY_RESIZE")
    await ec.stop()

    ec = await start_cloud(state)
    try:
        async with httpx.AsyncClient(base_url=ec.url) as client:
            cloud = Cloud(ec, client)
            s = await cloud.server(sid)
            assert s["status"] == "VERIFY_RESIZE"
            await cloud.action(sid, {"confirmResize": None})
            await cloud.wait_status(sid, "ACTIVE")
            await invariants.check(ec, sid)
            assert "boot=2 payload=ok" in await cloud.console(sid)
    finally:
        await ec.stop()


async def test_base_image_gone_from_image_service_comes_from_the_source(cloud: Cloud
                                                                         ) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    image_id = server["image"]["id"]
    assert (await cloud.api.delete(f"/image/v2/images/{image_id}")).status_code == 204
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    dest = cloud.cloud.compute(s["OS-EXT-SRV-ATTR:host"])
    src_base = cloud.cloud.compute(src).images.path_for(image_id)
    assert dest.images.path_for(image_id).read_bytes() == src_base.read_bytes()
    await invariants.check(cloud.cloud, sid)


async def test_no_copy_of_the_base_anywhere_fails_before_power_off(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    image_id = server["image"]["id"]
    await cloud.api.delete(f"/image/v2/images/{image_id}")
    cloud.cloud.compute(src).images.path_for(image_id).unlink()
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error" and "no copy of base image" in mig["error"]
    # The guest was never touched: its boot counter did not move.
    assert (await cloud.console(sid)).count("GUEST-BOOTED") == 1


async def test_a_build_whose_scheduling_hits_a_transient_error_is_retried(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadlock or a pool timeout rolls the scheduling transaction back whole;
    the build schedules again instead of leaving the server in BUILD."""
    from ferry.conductor import servers

    real = servers.select_destinations
    calls: list[str] = []

    async def flaky(*a: Any, **kw: Any) -> Any:
        calls.append("called")
        if len(calls) == 1:
            raise PoolTimeout("QueuePool limit of size 10 overflow 20 reached")
        return await real(*a, **kw)

    monkeypatch.setattr(servers, "select_destinations", flaky)
    server = await cloud.boot()
    assert server["status"] == "ACTIVE" and len(calls) == 2
    await invariants.total_usage_matches(cloud.cloud)
