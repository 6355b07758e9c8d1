"""Microversions with authentication on: 400/406 for bad versions, version
discovery without a token, and responses shaped exactly per microversion
(checked against tempest's own strict schemas when tempest is installed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.cmd.embedded import EmbeddedCloud
from tests.e2e.authcloud import Identity, start_auth_cloud

C = "/compute/v2.1"

# Nova's keys at 2.1 for an admin's GET /servers/{id} (progress: ACTIVE shows it).
SERVER_21 = {
    "id", "name", "status", "tenant_id", "user_id", "metadata", "hostId", "image", "flavor",
    "created", "updated", "addresses", "links", "accessIPv4", "accessIPv6",
    "OS-DCF:diskConfig", "OS-EXT-STS:task_state", "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state", "OS-EXT-AZ:availability_zone", "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at", "key_name", "config_drive", "security_groups",
    "os-extended-volumes:volumes_attached", "progress", "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname", "OS-EXT-SRV-ATTR:instance_name"}
MIGRATION_21 = {"id", "status", "instance_uuid", "source_node", "source_compute", "dest_node",
                "dest_compute", "dest_host", "old_instance_type_id", "new_instance_type_id",
                "created_at", "updated_at"}


class Env:
    def __init__(self, ec: EmbeddedCloud, ident: Identity, server: str) -> None:
        self.ec, self.ident, self.server = ec, ident, server

    async def get(self, path: str, version: str | None = None, **kw: Any) -> httpx.Response:
        return await self.ident.api.get(path, headers=self.ident.h(version=version), **kw)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    ec = await start_auth_cloud(tmp_path / "state")
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as api:
        ident = Identity(api)
        await ident.admin_login()
        r = await api.post("/image/v2/images", headers=ident.h(), json={
            "name": "img", "disk_format": "raw", "container_format": "bare"})
        image = r.json()["id"]
        await api.put(f"/image/v2/images/{image}/file", content=b"\0" * 4096,
                      headers={**ident.h(), "Content-Type": "application/octet-stream"})
        r = await api.post(f"{C}/servers", headers=ident.h(), json={"server": {
            "name": "vm", "imageRef": image, "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        sid = r.json()["server"]["id"]
        e = Env(ec, ident, sid)
        await _wait(e, "ACTIVE")
        assert (await api.post(f"{C}/servers/{sid}/action", json={"migrate": {}},
                               headers=ident.h())).status_code == 202
        await _wait(e, "VERIFY_RESIZE")
        yield e
    await ec.stop()


async def _wait(e: Env, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        s: dict[str, Any] = (await e.get(f"{C}/servers/{e.server}")).json()["server"]
        if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
            return s
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_bad_microversions_are_400_and_406(env: Env) -> None:
    for value, code, kind in (("compute 2.81", 406, "notAcceptable"),
                              ("compute 3.0", 406, "notAcceptable"),
                              ("compute 2.x", 400, "badRequest"),
                              ("compute two", 400, "badRequest")):
        r = await env.ident.api.get(f"{C}/servers", headers={
            **env.ident.h(), "OpenStack-API-Version": value})
        assert r.status_code == code, (value, r.text)
        assert r.json()[kind]["code"] == code
        assert "x-openstack-request-id" in r.headers
    r = await env.ident.api.get(f"{C}/servers", headers={
        **env.ident.h(), "X-OpenStack-Nova-API-Version": "2.1000"})
    assert r.status_code == 406
    # No token: the 401 comes first, as keystonemiddleware sits in front of Nova.
    r = await env.ident.api.get(f"{C}/servers", headers={"OpenStack-API-Version": "compute 9"})
    assert r.status_code == 401


async def test_versions_echoed_with_vary(env: Env) -> None:
    r = await env.get(f"{C}/servers", version="latest")
    assert r.headers["OpenStack-API-Version"] == "compute 2.80"
    assert r.headers["X-OpenStack-Nova-API-Version"] == "2.80"
    assert "OpenStack-API-Version" in r.headers["Vary"]
    assert r.headers["x-openstack-request-id"] == r.headers["x-compute-request-id"]


async def test_discovery_is_token_less(env: Env) -> None:
    api = env.ident.api
    root = (await api.get("/compute")).json()["versions"]
    assert [v["id"] for v in root] == ["v2.0", "v2.1"]
    assert root[1]["version"] == "2.80" and root[1]["min_version"] == "2.1"
    for path in (C, f"{C}/"):
        v = (await api.get(path)).json()["version"]
        assert v["id"] == "v2.1" and v["status"] == "CURRENT"
        assert v["media-types"][0]["type"].startswith("application/vnd.openstack.compute+json")


async def test_server_keys_exactly_nova_2_1(env: Env) -> None:
    await env.get(f"{C}/servers/{env.server}")  # VERIFY_RESIZE: progress shown
    s = (await env.get(f"{C}/servers/{env.server}")).json()["server"]
    assert set(s) == SERVER_21
    assert set(s["flavor"]) == {"id", "links"}
    s = (await env.get(f"{C}/servers/{env.server}", version="2.47")).json()["server"]
    assert "locked" in s and "description" in s and "tags" in s
    assert "OS-EXT-SRV-ATTR:hostname" in s and "host_status" in s
    assert set(s["flavor"]) == {"original_name", "ram", "vcpus", "disk", "ephemeral", "swap",
                                "extra_specs"}


async def test_migration_keys_per_microversion(env: Env) -> None:
    [m] = (await env.get(f"{C}/os-migrations")).json()["migrations"]
    assert set(m) == MIGRATION_21
    [m] = (await env.get(f"{C}/os-migrations", version="2.23")).json()["migrations"]
    assert set(m) == MIGRATION_21 | {"migration_type"}
    [m] = (await env.get(f"{C}/os-migrations", version="2.59")).json()["migrations"]
    assert set(m) == MIGRATION_21 | {"migration_type", "uuid"}
    [m] = (await env.get(f"{C}/os-migrations", version="2.80")).json()["migrations"]
    assert set(m) == MIGRATION_21 | {"migration_type", "uuid", "user_id", "project_id"}
    assert m["status"] == "finished" and m["migration_type"] == "migration"
    r = await env.get(f"{C}/os-migrations", version="2.59", params={"bogus": "1"})
    assert r.status_code == 400


async def test_tempests_strict_schemas_accept_ferrys_answers(env: Env) -> None:
    rest_client = pytest.importorskip("tempest.lib.common.rest_client")
    schemas = pytest.importorskip("tempest.lib.api_schema.response.compute.v2_1.servers")
    migrations = pytest.importorskip("tempest.lib.api_schema.response.compute.v2_1.migrations")
    flavors = pytest.importorskip("tempest.lib.api_schema.response.compute.v2_1.flavors")
    checks = [(f"{C}/servers/{env.server}", schemas.get_server),
              (f"{C}/servers", schemas.list_servers),
              (f"{C}/servers/detail", schemas.list_servers_detail),
              (f"{C}/os-migrations", migrations.list_migrations),
              (f"{C}/flavors/1", flavors.create_update_get_flavor_details),
              (f"{C}/flavors/detail", flavors.list_flavors_details),
              (f"{C}/flavors", flavors.list_flavors),
              (f"{C}/servers/{env.server}/os-instance-actions", schemas.list_instance_actions)]
    for path, schema in checks:
        r = await env.get(path)
        # tempest's own validator (Draft 4, its format checker, response headers too).
        resp = _TempestResponse(r)
        rest_client.RestClient.validate_response(schema, resp, r.json())


class _TempestResponse(dict[str, str]):
    """What tempest's validate_response reads: a header dict with `.status`."""

    def __init__(self, r: httpx.Response) -> None:
        super().__init__({k.lower(): v for k, v in r.headers.items()})
        self.status = r.status_code
