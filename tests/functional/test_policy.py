"""Nova's default policy with real tokens: who may migrate, confirm, revert,
resize, stop and start; what readers see; other projects get 404; a token of
project A cannot reach project B; operators override rules in policy.yaml."""

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

C = "/compute/v2.1"


@dataclass
class World:
    ec: EmbeddedCloud
    ident: Identity
    tokens: dict[str, str]  # reader, member, manager (project A), other (member of B), admin
    image: str

    @property
    def api(self) -> httpx.AsyncClient:
        return self.ident.api

    def h(self, who: str, version: str | None = None) -> dict[str, str]:
        return self.ident.h(self.tokens[who], version)

    async def boot(self, who: str = "member") -> str:
        r = await self.api.post(f"{C}/servers", headers=self.h(who), json={"server": {
            "name": "vm", "imageRef": self.image, "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        sid: str = r.json()["server"]["id"]
        await self.wait(sid, "ACTIVE")
        return sid

    async def show(self, sid: str, who: str = "admin") -> dict[str, Any]:
        r = await self.api.get(f"{C}/servers/{sid}", headers=self.h(who))
        assert r.status_code == 200, r.text
        server: dict[str, Any] = r.json()["server"]
        return server

    async def wait(self, sid: str, status: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = await self.show(sid)
            if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
                return s
            assert s["status"] != "ERROR", s.get("fault")
            assert time.monotonic() < deadline, (status, s["status"])
            await asyncio.sleep(0.05)

    async def act(self, sid: str, who: str, body: dict[str, Any],
                  version: str | None = None) -> httpx.Response:
        return await self.api.post(f"{C}/servers/{sid}/action", json=body,
                                   headers=self.h(who, version))


async def _world(ec: EmbeddedCloud, api: httpx.AsyncClient) -> World:
    ident = Identity(api)
    tokens = {"admin": await ident.admin_login()}
    a, b = await ident.project("proj-a"), await ident.project("proj-b")
    for role in ("reader", "member", "manager"):
        await ident.user(f"a-{role}", "pw", a, role)
        tokens[role] = await ident.login(f"a-{role}", "pw", "proj-a")
    await ident.user("b-member", "pw", b, "member")
    tokens["other"] = await ident.login("b-member", "pw", "proj-b")
    r = await api.post("/image/v2/images", headers=ident.h(), json={
        "name": "base", "disk_format": "raw", "container_format": "bare",
        "visibility": "public"})
    assert r.status_code == 201, r.text
    image = r.json()["id"]
    r = await api.put(f"/image/v2/images/{image}/file", content=b"\0" * 8192,
                      headers={**ident.h(), "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return World(ec, ident, tokens, image)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    ec = await start_auth_cloud(tmp_path / "state", hosts=3)
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as api:
        yield await _world(ec, api)
    await ec.stop()


def _forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["forbidden"]["message"].startswith("Policy doesn't allow")


def _not_found(r: httpx.Response) -> None:
    assert r.status_code == 404, r.text
    assert "itemNotFound" in r.json()


async def test_member_cannot_migrate_manager_can_but_not_to_a_host(world: World) -> None:
    sid = await world.boot()
    src = (await world.show(sid))["OS-EXT-SRV-ATTR:host"]
    _forbidden(await world.act(sid, "member", {"migrate": None}))
    _forbidden(await world.act(sid, "reader", {"migrate": None}))
    _forbidden(await world.act(sid, "manager", {"migrate": {"host": "host3"}}, "2.56"))
    assert (await world.show(sid))["status"] == "ACTIVE"  # refusals changed nothing
    assert (await world.act(sid, "manager", {"migrate": {}})).status_code == 202
    await world.wait(sid, "VERIFY_RESIZE")
    # Confirm and revert belong to members; readers may only look.
    _forbidden(await world.act(sid, "reader", {"confirmResize": None}))
    assert (await world.act(sid, "member", {"confirmResize": None})).status_code == 204
    s = await world.wait(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] != src
    dest = "host1" if s["OS-EXT-SRV-ATTR:host"] != "host1" else "host2"
    r = await world.act(sid, "admin", {"migrate": {"host": dest}}, "2.56")
    assert r.status_code == 202, r.text
    await world.wait(sid, "VERIFY_RESIZE")
    _forbidden(await world.act(sid, "reader", {"revertResize": None}))
    assert (await world.act(sid, "member", {"revertResize": None})).status_code == 202
    await world.wait(sid, "ACTIVE")


async def test_members_resize_stop_and_start(world: World) -> None:
    sid = await world.boot()
    _forbidden(await world.act(sid, "reader", {"resize": {"flavorRef": "2"}}))
    _forbidden(await world.act(sid, "reader", {"os-stop": None}))
    assert (await world.act(sid, "member", {"os-stop": None})).status_code == 202
    await world.wait(sid, "SHUTOFF")
    assert (await world.act(sid, "member", {"os-start": None})).status_code == 202
    await world.wait(sid, "ACTIVE")
    assert (await world.act(sid, "member", {"resize": {"flavorRef": "2"}})).status_code == 202
    await world.wait(sid, "VERIFY_RESIZE")
    assert (await world.act(sid, "member", {"confirmResize": None})).status_code == 204
    assert (await world.wait(sid, "ACTIVE"))["flavor"]["id"] == "2"


async def test_extended_attributes_are_for_admins_only(world: World) -> None:
    sid = await world.boot()
    for who in ("reader", "member", "manager"):
        s = await world.show(sid, who)
        assert not [k for k in s if k.startswith("OS-EXT-SRV-ATTR:")], who
        assert s["OS-EXT-STS:vm_state"] == "active"
    s = await world.show(sid, "admin")
    assert s["OS-EXT-SRV-ATTR:host"] in ("host1", "host2", "host3")
    r = await world.api.get(f"{C}/servers/{sid}", headers=world.h("reader", "2.16"))
    assert "host_status" not in r.json()["server"]


async def test_other_projects_servers_are_404_not_403(world: World) -> None:
    sid = await world.boot()
    _not_found(await world.api.get(f"{C}/servers/{sid}", headers=world.h("other")))
    for body in ({"migrate": None}, {"confirmResize": None}, {"revertResize": None},
                 {"os-stop": None}, {"resize": {"flavorRef": "2"}}):
        _not_found(await world.act(sid, "other", body))
    _not_found(await world.api.delete(f"{C}/servers/{sid}", headers=world.h("other")))
    _not_found(await world.api.get(f"{C}/servers/{sid}/os-instance-actions",
                                   headers=world.h("other")))
    r = await world.api.get(f"{C}/servers/detail", headers=world.h("other"))
    assert r.json()["servers"] == []
    # all_tenants is quietly ignored for non-admins, as in Nova.
    r = await world.api.get(f"{C}/servers/detail?all_tenants=1", headers=world.h("other"))
    assert r.json()["servers"] == []
    r = await world.api.get(f"{C}/servers/detail?all_tenants=1", headers=world.h("admin"))
    assert [s["id"] for s in r.json()["servers"]] == [sid]
    # Ferry's own view: readers see their project's migrations, others nothing.
    assert (await world.act(sid, "manager", {"migrate": None})).status_code == 202
    await world.wait(sid, "VERIFY_RESIZE")
    r = await world.api.get("/ferry/v1/migrations", headers=world.h("reader"))
    assert [m["instance_uuid"] for m in r.json()["migrations"]] == [sid]
    mig = r.json()["migrations"][0]["uuid"]
    r = await world.api.get("/ferry/v1/migrations", headers=world.h("other"))
    assert r.json()["migrations"] == []
    _not_found(await world.api.get(f"/ferry/v1/migrations/{mig}", headers=world.h("other")))


async def test_token_scoped_to_a_cannot_reach_b(world: World) -> None:
    # The member of project B owns a server; project A's member token is refused.
    sid = await world.boot("other")
    for who in ("member", "manager", "reader"):
        _not_found(await world.api.get(f"{C}/servers/{sid}", headers=world.h(who)))
        _not_found(await world.act(sid, who, {"os-stop": None}))
    b_project = (await world.show(sid))["tenant_id"]
    r = await world.api.get(f"{C}/os-migrations", params={"project_id": b_project},
                            headers=world.h("manager"))
    _forbidden(r)


async def test_os_migrations_listing_rules(world: World) -> None:
    sid = await world.boot()
    # Nova records the requester's project on the migration: the manager's here.
    assert (await world.act(sid, "manager", {"migrate": None})).status_code == 202
    await world.wait(sid, "VERIFY_RESIZE")
    a_project = (await world.show(sid))["tenant_id"]
    _forbidden(await world.api.get(f"{C}/os-migrations", headers=world.h("member")))
    # A manager lists its own project's migrations, without host fields.
    _forbidden(await world.api.get(f"{C}/os-migrations", headers=world.h("manager")))
    r = await world.api.get(f"{C}/os-migrations", params={"project_id": a_project},
                            headers=world.h("manager"))
    assert r.status_code == 200, r.text
    [m] = r.json()["migrations"]
    assert m["instance_uuid"] == sid
    assert m["source_compute"] is m["dest_compute"] is m["dest_host"] is None
    r = await world.api.get(f"{C}/os-migrations", headers=world.h("admin"))
    [m] = r.json()["migrations"]
    assert m["source_compute"] and m["dest_compute"] and m["dest_host"]
    _forbidden(await world.api.get(f"{C}/os-hypervisors", headers=world.h("manager")))
    _forbidden(await world.api.get(f"{C}/os-services", headers=world.h("manager")))


async def test_image_visibility(world: World) -> None:
    r = await world.api.post("/image/v2/images", headers=world.h("member"), json={
        "name": "private", "disk_format": "raw", "container_format": "bare"})
    assert r.status_code == 201
    private = r.json()["id"]
    r = await world.api.post("/image/v2/images", headers=world.h("member"), json={
        "name": "p", "disk_format": "raw", "visibility": "public"})
    assert r.status_code == 403
    assert (await world.api.get(f"/image/v2/images/{private}",
                                headers=world.h("reader"))).status_code == 200
    assert (await world.api.get(f"/image/v2/images/{private}",
                                headers=world.h("other"))).status_code == 404
    names = {i["name"] for i in (await world.api.get(
        "/image/v2/images", headers=world.h("other"))).json()["images"]}
    assert names == {"base"}
    r = await world.api.post(f"{C}/servers", headers=world.h("other"), json={"server": {
        "name": "x", "imageRef": private, "flavorRef": "1"}})
    assert r.status_code == 400


async def test_policy_file_overrides_a_rule(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"os_compute_api:os-migrate-server:migrate": '
                      '"rule:project_member_or_admin"\n')
    ec = await start_auth_cloud(tmp_path / "state", policy_file=policy)
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=30) as api:
            w = await _world(ec, api)
            sid = await w.boot()
            assert (await w.act(sid, "member", {"migrate": None})).status_code == 202
            await w.wait(sid, "VERIFY_RESIZE")
            # Edits apply without a restart (oslo.policy re-reads a changed file).
            policy.write_text('"os_compute_api:servers:confirm_resize": "role:admin"\n')
            _forbidden(await w.act(sid, "member", {"confirmResize": None}))
            assert (await w.act(sid, "admin", {"confirmResize": None})).status_code == 204
    finally:
        await ec.stop()
