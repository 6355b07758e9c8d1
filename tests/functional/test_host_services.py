"""Disabling, enabling and forcing down compute hosts with Nova's PUT
/os-services (2.53+ by uuid, older by action + host/binary), who may do it,
bad requests that change nothing, and what the scheduler then does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cmd.embedded import EmbeddedCloud
from tests.e2e.authcloud import Identity, start_auth_cloud
from tests.support import invariants

C = "/compute/v2.1"
SERVICE_KEYS = {"id", "binary", "host", "zone", "status", "state", "updated_at",
                "disabled_reason", "forced_down"}


@dataclass
class Env:
    ec: EmbeddedCloud
    ident: Identity
    manager: str  # a project manager's token: not an admin

    @property
    def api(self) -> httpx.AsyncClient:
        return self.ident.api

    def h(self, version: str | None = "2.53", token: str | None = None) -> dict[str, str]:
        return self.ident.h(token, version)

    async def services(self, version: str = "2.53") -> dict[str, dict[str, Any]]:
        r = await self.api.get(f"{C}/os-services", headers=self.h(version))
        assert r.status_code == 200, r.text
        return {s["host"]: s for s in r.json()["services"]}

    async def put(self, ident: str, body: Any, version: str | None = "2.53",
                  token: str | None = None) -> httpx.Response:
        return await self.api.put(f"{C}/os-services/{ident}", json=body,
                                  headers=self.h(version, token))

    async def server(self, sid: str) -> dict[str, Any]:
        r = await self.api.get(f"{C}/servers/{sid}", headers=self.h())
        assert r.status_code == 200, r.text
        server: dict[str, Any] = r.json()["server"]
        return server

    async def wait(self, sid: str, status: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = await self.server(sid)
            if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
                return s
            assert s["status"] != "ERROR", s.get("fault")
            assert time.monotonic() < deadline, (status, s["status"])
            await asyncio.sleep(0.05)

    async def boot(self) -> dict[str, Any]:
        r = await self.api.post("/image/v2/images", headers=self.h(), json={
            "name": "base", "disk_format": "raw", "container_format": "bare"})
        image = r.json()["id"]
        r = await self.api.put(f"/image/v2/images/{image}/file", content=b"\0" * 8192,
                               headers={**self.h(), "Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        r = await self.api.post(f"{C}/servers", headers=self.h(), json={"server": {
            "name": "vm", "imageRef": image, "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        return await self.wait(r.json()["server"]["id"], "ACTIVE")

    async def migrate(self, sid: str, host: str | None = None) -> httpx.Response:
        return await self.api.post(f"{C}/servers/{sid}/action",
                                   json={"migrate": {"host": host} if host else None},
                                   headers=self.h("2.56"))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    ec = await start_auth_cloud(tmp_path / "state", hosts=3)
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as api:
        ident = Identity(api)
        await ident.admin_login()
        project = await ident.project("proj-a")
        await ident.user("a-manager", "pw", project, "manager")
        yield Env(ec, ident, await ident.login("a-manager", "pw", "proj-a"))
    await ec.stop()


def _error(r: httpx.Response, code: int, text: str = "") -> str:
    kind = {400: "badRequest", 403: "forbidden", 404: "itemNotFound",
            409: "conflictingRequest"}[code]
    assert r.status_code == code, r.text
    message: str = r.json()[kind]["message"]
    assert text in message, message
    return message


async def test_disable_enable_and_force_down_by_uuid(env: Env) -> None:
    svc = (await env.services())["host1"]
    assert svc["status"] == "enabled" and svc["state"] == "up"
    r = await env.put(svc["id"], {"status": "disabled", "disabled_reason": "new disks"})
    assert r.status_code == 200, r.text
    out = r.json()["service"]
    assert set(out) == SERVICE_KEYS
    assert (out["id"], out["host"], out["binary"]) == (svc["id"], "host1", "ferry-compute")
    assert out["status"] == "disabled" and out["disabled_reason"] == "new disks"
    listed = (await env.services())["host1"]
    assert listed["status"] == "disabled" and listed["disabled_reason"] == "new disks"
    # Hypervisors show it too.
    r = await env.api.get(f"{C}/os-hypervisors", headers=env.h())
    assert {h["hypervisor_hostname"]: h["status"] for h in r.json()["hypervisors"]}[
        "host1"] == "disabled"

    out = (await env.put(svc["id"], {"status": "enabled"})).json()["service"]
    assert out["status"] == "enabled" and out["disabled_reason"] is None

    out = (await env.put(svc["id"], {"forced_down": True})).json()["service"]
    assert out["forced_down"] is True and out["state"] == "down"
    # Both at once, and Nova's string booleans.
    out = (await env.put(svc["id"], {"status": "disabled", "forced_down": "false"})
           ).json()["service"]
    assert out["forced_down"] is False and out["state"] == "up"
    assert out["status"] == "disabled" and out["disabled_reason"] is None
    assert (await env.put(svc["id"], {"status": "enabled"})).status_code == 200


async def test_bad_updates_are_refused_and_change_nothing(env: Env) -> None:
    before = await env.services()
    sid = before["host1"]["id"]
    missing = "2b9c1d5e-0000-4000-8000-000000000000"
    _error(await env.put(missing, {"status": "disabled"}), 404,
           f"Service {missing} could not be found.")
    _error(await env.put("17", {"status": "disabled"}), 400, "Invalid uuid 17")
    _error(await env.put(sid, {"status": "off"}), 400, "status")
    _error(await env.put(sid, {"status": "disabled", "colour": "red"}), 400,
           "Additional properties are not allowed")
    _error(await env.put(sid, {"status": "enabled", "disabled_reason": "why"}), 400,
           "Specifying 'disabled_reason' with status 'enabled' is invalid.")
    _error(await env.put(sid, {}), 400, "No updates were requested")
    _error(await env.put(sid, {"disabled_reason": "only a reason"}), 400,
           "No updates were requested")
    _error(await env.put(sid, {"status": "disabled", "disabled_reason": ""}), 400,
           "disabled_reason")
    _error(await env.put(sid, {"status": "disabled", "disabled_reason": "x" * 256}), 400,
           "disabled_reason")
    _error(await env.put(sid, {"forced_down": "maybe"}), 400, "forced_down")
    _error(await env.put(sid, ["disabled"]), 400)
    r = await env.api.put(f"{C}/os-services/{sid}", content=b"{not json",
                          headers=env.h())
    _error(r, 400, "Malformed request body")
    # Not an admin: 403 by policy (os_compute_api:os-services:update), at any version.
    _error(await env.put(sid, {"status": "disabled"}, token=env.manager), 403,
           "os_compute_api:os-services:update")
    _error(await env.put("disable", {"host": "host1", "binary": "nova-compute"},
                         version="2.52", token=env.manager), 403)
    after = await env.services()
    keep = ("status", "disabled_reason", "forced_down", "state")
    assert {h: [s[k] for k in keep] for h, s in after.items()} == \
        {h: [s[k] for k in keep] for h, s in before.items()}


async def test_action_forms_before_2_53(env: Env) -> None:
    body = {"host": "host2", "binary": "nova-compute"}
    r = await env.put("disable", body, version="2.52")
    assert r.status_code == 200, r.text
    assert r.json() == {"service": {**body, "status": "disabled"}}
    r = await env.put("disable-log-reason", {**body, "disabled_reason": "fan"},
                      version="2.52")
    assert r.json() == {"service": {**body, "status": "disabled", "disabled_reason": "fan"}}
    assert (await env.services())["host2"]["disabled_reason"] == "fan"
    _error(await env.put("disable-log-reason", body, version="2.52"), 400,
           "Missing disabled reason field")
    r = await env.put("enable", {"host": "host2", "binary": "ferry-compute"}, version="2.1")
    assert r.json() == {"service": {"host": "host2", "binary": "ferry-compute",
                                    "status": "enabled"}}
    r = await env.put("force-down", {**body, "forced_down": True}, version="2.11")
    assert r.json() == {"service": {**body, "forced_down": True}}
    assert (await env.services())["host2"]["state"] == "down"
    _error(await env.put("force-down", body, version="2.11"), 400, "Missing forced_down")
    r = await env.put("force-down", {**body, "forced_down": False}, version="2.11")
    assert r.json()["service"]["forced_down"] is False
    # force-down came with 2.11: before it the action is unknown, the field invalid.
    _error(await env.put("force-down", body, version="2.10"), 404, "Unknown action")
    _error(await env.put("force-down", {**body, "forced_down": True}, version="2.10"), 400,
           "Additional properties")
    _error(await env.put("reboot", body, version="2.52"), 404, "Unknown action")
    _error(await env.put("disable", {"host": "nowhere", "binary": "nova-compute"},
                         version="2.52"), 404, "Could not find binary nova-compute on host "
                                               "nowhere.")
    _error(await env.put("disable", {"host": "host2", "binary": "nova-scheduler"},
                         version="2.52"), 400, "Only nova-compute services can be updated")
    _error(await env.put("disable", {"host": "host2"}, version="2.52"), 400, "binary")
    # From 2.53 the path holds a uuid, not an action, and host/binary are
    # not fields any more (the body is checked first, as Nova does).
    _error(await env.put("disable", {"status": "disabled"}), 400, "Invalid uuid disable")
    _error(await env.put("disable", body), 400, "Additional properties")
    svc = (await env.services())["host2"]
    assert (svc["status"], svc["disabled_reason"], svc["forced_down"]) == \
        ("enabled", None, False)


async def test_scheduler_never_picks_a_disabled_host(env: Env) -> None:
    server = await env.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    off, spare = sorted(h for h in ("host1", "host2", "host3") if h != src)
    r = await env.put((await env.services())[off]["id"],
                      {"status": "disabled", "disabled_reason": "maintenance"})
    assert r.status_code == 200, r.text

    # Naming the disabled host: accepted, then no valid host (as Nova: the
    # scheduler's ComputeFilter refuses it); the server stays where it was.
    assert (await env.migrate(sid, off)).status_code == 202
    await env.ec.conductor.wait_idle()
    s = await env.wait(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src
    r = await env.api.get("/ferry/v1/migrations", params={"instance_uuid": sid},
                          headers=env.h())
    [mig] = r.json()["migrations"]
    assert mig["status"] == "error" and "No valid host" in mig["error"]
    assert f"{off}: service disabled" in mig["error"]

    # Without a host: the scheduler skips it and picks the other one.
    assert (await env.migrate(sid)).status_code == 202
    s = await env.wait(sid, "VERIFY_RESIZE")
    assert s["OS-EXT-SRV-ATTR:host"] == spare
    r = await env.api.post(f"{C}/servers/{sid}/action", json={"confirmResize": None},
                           headers=env.h())
    assert r.status_code == 204, r.text
    await env.wait(sid, "ACTIVE")
    await invariants.check(env.ec, sid)
    await invariants.total_usage_matches(env.ec)


async def test_migrating_off_a_host_forced_down_is_409(env: Env) -> None:
    server = await env.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    svc = (await env.services())[src]
    assert (await env.put(svc["id"], {"forced_down": True})).status_code == 200
    _error(await env.migrate(sid), 409, f"Compute service of {src} is unavailable at this "
                                        "time.")
    s = await env.server(sid)
    assert s["status"] == "ACTIVE" and s["OS-EXT-STS:task_state"] is None
    r = await env.api.get("/ferry/v1/migrations", params={"instance_uuid": sid},
                          headers=env.h())
    assert r.json()["migrations"] == []
    assert (await env.put(svc["id"], {"forced_down": False})).status_code == 200
    assert (await env.migrate(sid)).status_code == 202
    await env.wait(sid, "VERIFY_RESIZE")
