"""Bad requests get Nova's error shape and code, and change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support import invariants
from tests.support.cloud import Cloud


async def _snapshot(cloud: Cloud, sid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    s = await cloud.server(sid)
    s.pop("updated", None)
    return s, await cloud.migrations(sid)


def _error(r: httpx.Response, code: int, kind: str) -> str:
    assert r.status_code == code, r.text
    body = r.json()
    assert list(body) == [kind], body
    assert body[kind]["code"] == code
    message: str = body[kind]["message"]
    assert message
    return message


async def test_unknown_server_is_404_item_not_found(cloud: Cloud) -> None:
    r = await cloud.action("9b7f3a52-0000-4000-8000-000000000000", {"migrate": None})
    msg = _error(r, 404, "itemNotFound")
    assert "could not be found" in msg
    r = await cloud.api.get("/compute/v2.1/servers/nope")
    _error(r, 404, "itemNotFound")


async def test_malformed_bodies_are_400_and_change_nothing(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid = server["id"]
    before = await _snapshot(cloud, sid)
    url = f"/compute/v2.1/servers/{sid}/action"
    r = await cloud.api.post(url, content=b"{not json", headers={"Content-Type":
                                                                  "application/json"})
    _error(r, 400, "badRequest")
    _error(await cloud.api.post(url, json=["migrate"]), 400, "badRequest")
    _error(await cloud.api.post(url, json={"migrate": None, "os-stop": None}), 400,
           "badRequest")
    _error(await cloud.api.post(url, json={"fly": None}), 400, "badRequest")
    _error(await cloud.action(sid, {"migrate": {"host": 7}}, version="2.56"), 400,
           "badRequest")
    _error(await cloud.action(sid, {"migrate": {"hots": "host2"}}, version="2.56"), 400,
           "badRequest")
    _error(await cloud.action(sid, {"migrate": "host2"}, version="2.56"), 400, "badRequest")
    _error(await cloud.api.post("/compute/v2.1/servers", json={"server": {"name": "x"}}),
           400, "badRequest")
    _error(await cloud.api.post("/compute/v2.1/servers", json={"server": {
        "name": "x", "imageRef": "missing", "flavorRef": "1"}}), 400, "badRequest")
    assert await _snapshot(cloud, sid) == before
    await invariants.check(cloud.cloud, sid)


async def test_requested_host_same_or_unknown_is_400(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    before = await _snapshot(cloud, sid)
    msg = _error(await cloud.action(sid, {"migrate": {"host": src}}, version="2.56"), 400,
                 "badRequest")
    assert "same" in msg
    msg = _error(await cloud.action(sid, {"migrate": {"host": "host99"}}, version="2.56"),
                 400, "badRequest")
    assert "host99" in msg
    assert await _snapshot(cloud, sid) == before
    await invariants.check(cloud.cloud, sid)


async def test_requested_host_is_honoured_from_2_56(cloud: Cloud) -> None:
    ec = cloud.cloud
    await ec.add_host(3)
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    # With empty hosts the weighers would pick host2 (ties break by name), so
    # landing on host3 shows the request was honoured.
    assert src == "host1"
    target = "host3"
    r = await cloud.action(sid, {"migrate": {"host": target}}, version="2.56")
    assert r.status_code == 202
    assert r.headers["OpenStack-API-Version"] == "compute 2.56"
    s = await cloud.wait_status(sid, "VERIFY_RESIZE")
    assert s["OS-EXT-SRV-ATTR:host"] == target


async def test_migrate_while_task_runs_or_wrong_state_is_409(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid = server["id"]
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    msg = _error(await cloud.action(sid, {"migrate": None}), 409, "conflictingRequest")
    assert "vm_state resized" in msg
    msg = _error(await cloud.action(sid, {"os-stop": None}), 409, "conflictingRequest")
    await cloud.action(sid, {"confirmResize": None})
    await cloud.wait_status(sid, "ACTIVE")
    # confirm/revert when nothing was resized: 400, as Nova answers
    msg = _error(await cloud.action(sid, {"confirmResize": None}), 400, "badRequest")
    assert "not been resized" in msg
    _error(await cloud.action(sid, {"revertResize": None}), 400, "badRequest")
    await invariants.check(cloud.cloud, sid)


async def test_two_concurrent_migrate_requests_exactly_one_wins(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid = server["id"]
    results = await asyncio.gather(*[cloud.action(sid, {"migrate": None}) for _ in range(4)])
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 409, 409, 409], codes
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    assert len(await cloud.migrations(sid)) == 1
    await invariants.check(cloud.cloud, sid)


async def test_no_valid_host_keeps_server_active_and_records_fault(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    other = next(c.host for c in cloud.cloud.computes if c.host != src)
    async with cloud.cloud.sessions() as s, s.begin():
        from sqlalchemy import update

        from ferry.db.models import Service

        await s.execute(update(Service).where(Service.host == other).values(disabled=True))
    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    await cloud.settle()
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    assert "fault" not in s  # Nova shows faults only for ERROR servers
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error" and "No valid host" in mig["error"]
    r = await cloud.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions")
    act = next(a for a in r.json()["instanceActions"] if a["action"] == "migrate")
    r = await cloud.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/"
                            f"{act['request_id']}")
    events = r.json()["instanceAction"]["events"]
    assert any(e["event"] == "cold_migrate" and e["result"] == "Error"
               and "disabled" in (e["traceback"] or "") for e in events), events
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)


async def test_microversion_out_of_range_is_406_and_malformed_400(cloud: Cloud) -> None:
    r = await cloud.api.get("/compute/v2.1/flavors",
                            headers={"OpenStack-API-Version": "compute 2.999"})
    _error(r, 406, "notAcceptable")
    r = await cloud.api.get("/compute/v2.1/flavors",
                            headers={"OpenStack-API-Version": "compute two"})
    _error(r, 400, "badRequest")
    r = await cloud.api.get("/compute/v2.1/flavors",
                            headers={"X-OpenStack-Nova-API-Version": "latest"})
    assert r.status_code == 200 and r.headers["X-OpenStack-Nova-API-Version"] == "2.80"
    assert r.headers["x-openstack-request-id"].startswith("req-")
