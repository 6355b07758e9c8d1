"""With the bus down, requests that need the conductor answer 503 and change nothing."""

from __future__ import annotations

from typing import Any

from ferry.bus.base import BusError
from tests.support.cloud import Cloud


async def test_bus_down_means_503_and_no_stuck_task(cloud: Cloud, monkeypatch: Any) -> None:
    server = await cloud.boot()
    sid = server["id"]
    image = server["image"]["id"]

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise BusError("the broker is unreachable")

    monkeypatch.setattr(cloud.cloud.bus, "cast", broken)
    for call in (
        cloud.action(sid, {"os-stop": None}),
        cloud.api.delete(f"/compute/v2.1/servers/{sid}"),
        cloud.api.post("/compute/v2.1/servers", json={"server": {
            "name": "new", "imageRef": image, "flavorRef": "1"}}),
    ):
        r = await call
        assert r.status_code == 503, r.text
        assert r.json()["serviceUnavailable"]["code"] == 503
    monkeypatch.undo()
    s = await cloud.server(sid)
    assert s["status"] == "ACTIVE" and s["OS-EXT-STS:task_state"] is None
    names = [x["name"] for x in (await cloud.api.get("/compute/v2.1/servers")).json()["servers"]]
    assert names == ["vm"]
    # and the server still accepts work once the bus is back
    assert (await cloud.action(sid, {"os-stop": None})).status_code == 202
    await cloud.wait_status(sid, "SHUTOFF")
