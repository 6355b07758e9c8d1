"""Identity v3 against an embedded cloud with authentication on: login,
token validation and revocation, expiry, the admin calls tempest uses, the
bootstrap and clouds.yaml, and what a database dump gives away (nothing)."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ferry.cmd.embedded import CloudConfig, EmbeddedCloud, InsecureBindRefused
from tests.e2e.authcloud import ADMIN_PASSWORD, V3, Identity, password_body, start_auth_cloud

AUTH_MSG = "The request you have made requires authentication."


@pytest.fixture
async def idc(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedCloud, Identity]]:
    ec = await start_auth_cloud(tmp_path / "state")
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
        ident = Identity(client)
        await ident.admin_login()
        yield ec, ident
    await ec.stop()


def _keystone_error(r: httpx.Response, code: int) -> str:
    assert r.status_code == code, r.text
    body = r.json()
    assert list(body) == ["error"], body
    assert body["error"]["code"] == code and body["error"]["title"]
    msg: str = body["error"]["message"]
    return msg


async def test_version_documents_need_no_token(idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    api = ident.api
    r = await api.get("/identity")
    assert r.status_code == 300
    v = r.json()["versions"]["values"][0]
    assert v["id"].startswith("v3.") and v["status"] == "stable"
    assert v["links"][0]["href"].endswith("/identity/v3/")
    assert (await api.get("/identity/v3")).json()["version"]["id"] == v["id"]
    for path in ("/compute", "/compute/", "/compute/v2.1", "/compute/v2.1/"):
        r = await api.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "x-openstack-request-id" in r.headers
    # ... but nothing else does.
    r = await api.get("/compute/v2.1/servers")
    assert _keystone_error(r, 401) == AUTH_MSG
    assert r.headers["WWW-Authenticate"].startswith("Keystone uri=")
    assert (await api.get("/image/v2/images")).status_code == 401
    assert (await api.get("/ferry/v1/migrations")).status_code == 401
    assert (await api.get(f"{V3}/users")).status_code == 401


async def test_password_login_answers_keystones_token(
        idc: tuple[EmbeddedCloud, Identity]) -> None:
    ec, ident = idc
    r = await ident.api.post(f"{V3}/auth/tokens",
                             json=password_body("admin", ADMIN_PASSWORD, "admin"))
    assert r.status_code == 201
    assert r.headers["X-Subject-Token"]
    tok = r.json()["token"]
    assert tok["methods"] == ["password"]
    assert tok["user"]["name"] == "admin"
    assert tok["user"]["domain"] == {"id": "default", "name": "Default"}
    assert tok["project"]["name"] == "admin"
    assert tok["project"]["domain"] == {"id": "default", "name": "Default"}
    assert {x["name"] for x in tok["roles"]} == {"admin", "manager", "member", "reader"}
    assert tok["expires_at"].endswith("Z") and tok["issued_at"].endswith("Z")
    services = {c["type"]: c for c in tok["catalog"]}
    assert set(services) == {"compute", "image", "identity"}
    for stype, path in (("compute", "/compute/v2.1"), ("image", "/image"),
                        ("identity", "/identity/v3")):
        eps = services[stype]["endpoints"]
        assert {e["interface"] for e in eps} == {"public", "internal", "admin"}
        assert all(e["region"] == e["region_id"] == "RegionOne" for e in eps)
        assert all(e["url"] == ec.url + path for e in eps)
    # By user id and domain id, and without the catalog.
    uid = tok["user"]["id"]
    r = await ident.api.post(f"{V3}/auth/tokens?nocatalog", json={"auth": {
        "identity": {"methods": ["password"],
                     "password": {"user": {"id": uid, "password": ADMIN_PASSWORD}}},
        "scope": {"project": {"id": tok["project"]["id"]}}}})
    assert r.status_code == 201 and "catalog" not in r.json()["token"]


async def test_wrong_password_and_unknown_user_look_the_same(
        idc: tuple[EmbeddedCloud, Identity], caplog: pytest.LogCaptureFixture) -> None:
    _, ident = idc
    caplog.set_level(logging.WARNING)
    wrong = await ident.api.post(f"{V3}/auth/tokens",
                                 json=password_body("admin", "not-the-password", "admin"))
    nobody = await ident.api.post(f"{V3}/auth/tokens",
                                  json=password_body("nobody", "not-the-password", "admin"))
    assert _keystone_error(wrong, 401) == _keystone_error(nobody, 401) == AUTH_MSG
    assert wrong.json() == nobody.json()
    assert "X-Subject-Token" not in wrong.headers
    logged = caplog.text
    assert "authentication failed for user" in logged and "nobody" in logged
    assert "not-the-password" not in logged


async def test_malformed_auth_requests_are_400(idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    bodies: list[dict[str, Any]] = [
        {}, {"auth": {}}, {"auth": {"identity": {"methods": "password"}}},
        {"auth": {"identity": {"methods": ["password"], "password": {}}}}]
    for body in bodies:
        _keystone_error(await ident.api.post(f"{V3}/auth/tokens", json=body), 400)
    r = await ident.api.post(f"{V3}/auth/tokens", content=b"{nope",
                             headers={"Content-Type": "application/json"})
    _keystone_error(r, 400)


async def test_validate_rescope_and_revoke(idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    api, admin = ident.api, ident.admin
    other = await ident.login("admin", ADMIN_PASSWORD, "admin")
    r = await api.get(f"{V3}/auth/tokens", headers={"X-Auth-Token": admin,
                                                    "X-Subject-Token": other})
    assert r.status_code == 200 and r.headers["X-Subject-Token"] == other
    assert r.json()["token"]["project"]["name"] == "admin"
    r = await api.head(f"{V3}/auth/tokens", headers={"X-Auth-Token": admin,
                                                     "X-Subject-Token": other})
    assert r.status_code == 200
    r = await api.post(f"{V3}/auth/tokens", json={"auth": {
        "identity": {"methods": ["token"], "token": {"id": other}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
    assert r.status_code == 201
    rescoped = r.json()["token"]
    assert rescoped["methods"] == ["token", "password"]
    r = await api.delete(f"{V3}/auth/tokens", headers={"X-Auth-Token": admin,
                                                       "X-Subject-Token": other})
    assert r.status_code == 204
    # A revoked token is refused everywhere, and cannot be validated or rescoped.
    _keystone_error(await api.get("/compute/v2.1/servers", headers={"X-Auth-Token": other}),
                    401)
    r = await api.get(f"{V3}/auth/tokens", headers={"X-Auth-Token": admin,
                                                    "X-Subject-Token": other})
    _keystone_error(r, 404)
    r = await api.post(f"{V3}/auth/tokens", json={"auth": {
        "identity": {"methods": ["token"], "token": {"id": other}}}})
    _keystone_error(r, 401)
    assert (await api.get("/compute/v2.1/servers", headers=ident.h())).status_code == 200


async def test_expired_token_is_401(tmp_path: Path) -> None:
    ec = await start_auth_cloud(tmp_path / "s", hosts=1, token_ttl=1)
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=30) as api:
            token = await Identity(api).login("admin", ADMIN_PASSWORD, "admin")
            h = {"X-Auth-Token": token}
            assert (await api.get("/compute/v2.1/servers", headers=h)).status_code == 200
            await asyncio.sleep(1.2)
            r = await api.get("/compute/v2.1/servers", headers=h)
            assert _keystone_error(r, 401) == AUTH_MSG
    finally:
        await ec.stop()


async def test_admin_calls_tempest_dynamic_credentials_use(
        idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    api, h = ident.api, ident.h()
    r = await api.get(f"{V3}/domains", params={"name": "Default"}, headers=h)
    assert [d["id"] for d in r.json()["domains"]] == ["default"]
    assert (await api.get(f"{V3}/domains/default", headers=h)).json()["domain"]["name"] \
        == "Default"
    roles = {x["name"] for x in (await api.get(f"{V3}/roles", headers=h)).json()["roles"]}
    assert {"admin", "manager", "member", "reader"} <= roles
    pid = await ident.project("tempest-p")
    assert (await api.get(f"{V3}/projects/{pid}", headers=h)).json()["project"]["name"] \
        == "tempest-p"
    r = await api.post(f"{V3}/projects", headers=h, json={"project": {"name": "tempest-p"}})
    _keystone_error(r, 409)
    uid = await ident.user("tempest-u", "pw-u", pid, "member")
    r = await api.get(f"{V3}/users/{uid}", headers=h)
    assert r.json()["user"]["name"] == "tempest-u" and "password" not in r.json()["user"]
    member = await api.get(f"{V3}/roles", params={"name": "member"}, headers=h)
    rid = member.json()["roles"][0]["id"]
    r = await api.get(f"{V3}/projects/{pid}/users/{uid}/roles/{rid}", headers=h)
    assert r.status_code == 204
    r = await api.get(f"{V3}/role_assignments",
                      params={"user.id": uid, "scope.project.id": pid}, headers=h)
    assert [a["role"]["id"] for a in r.json()["role_assignments"]] == [rid]
    r = await api.get(f"{V3}/role_assignments", params={"user.id": uid, "effective": "",
                                                         "include_names": "1"}, headers=h)
    assert {a["role"]["name"] for a in r.json()["role_assignments"]} == {"member", "reader"}
    token = await ident.login("tempest-u", "pw-u", "tempest-p")
    # A member administers nothing.
    r = await api.post(f"{V3}/users", headers=ident.h(token),
                       json={"user": {"name": "x", "password": "y"}})
    _keystone_error(r, 403)
    # Deleting the user revokes its tokens; deleting the project too.
    assert (await api.delete(f"{V3}/users/{uid}", headers=h)).status_code == 204
    r = await api.get("/compute/v2.1/servers", headers=ident.h(token))
    _keystone_error(r, 401)
    assert (await api.delete(f"{V3}/projects/{pid}", headers=h)).status_code == 204
    _keystone_error(await api.get(f"{V3}/projects/{pid}", headers=h), 404)


async def test_revoking_the_role_ends_the_token(idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    api, h = ident.api, ident.h()
    pid = await ident.project("p-revoke")
    uid = await ident.user("u-revoke", "pw", pid, "reader")
    token = await ident.login("u-revoke", "pw", "p-revoke")
    assert (await api.get("/compute/v2.1/servers", headers=ident.h(token))).status_code == 200
    rid = await ident.role_id("reader")
    r = await api.delete(f"{V3}/projects/{pid}/users/{uid}/roles/{rid}", headers=h)
    assert r.status_code == 204
    _keystone_error(await api.get("/compute/v2.1/servers", headers=ident.h(token)), 401)
    # ... and a user without a role on a project cannot scope to it.
    r = await api.post(f"{V3}/auth/tokens", json=password_body("u-revoke", "pw", "p-revoke"))
    _keystone_error(r, 401)


async def test_domain_scoped_token_is_refused_by_compute(
        idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    api, h = ident.api, ident.h()
    admin_id = (await api.get(f"{V3}/users", params={"name": "admin"}, headers=h)
                ).json()["users"][0]["id"]
    rid = await ident.role_id("admin")
    assert (await api.put(f"{V3}/domains/default/users/{admin_id}/roles/{rid}",
                          headers=h)).status_code == 204
    r = await api.post(f"{V3}/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
        "scope": {"domain": {"name": "Default"}}}})
    assert r.status_code == 201
    assert r.json()["token"]["domain"] == {"id": "default", "name": "Default"}
    dtoken = r.headers["X-Subject-Token"]
    r = await api.get("/compute/v2.1/servers", headers={"X-Auth-Token": dtoken})
    assert r.status_code == 403 and "forbidden" in r.json()
    assert (await api.get(f"{V3}/projects", headers={"X-Auth-Token": dtoken})).status_code \
        == 200


async def test_database_dump_reveals_no_token_or_password(
        idc: tuple[EmbeddedCloud, Identity]) -> None:
    ec, ident = idc
    token = ident.admin
    await ident.api.get("/compute/v2.1/servers", headers=ident.h())
    await ec.engine.dispose()  # checkpoint nothing pending: read every file of the DB
    dump = b"".join(p.read_bytes() for p in ec.cfg.state_dir.glob("ferry.db*"))
    assert token.encode() not in dump
    assert ADMIN_PASSWORD.encode() not in dump
    assert b"scrypt$" in dump


async def test_bootstrap_writes_clouds_yaml_once_and_keeps_the_admin(tmp_path: Path) -> None:
    state = tmp_path / "s"
    cfg = CloudConfig(state_dir=state, hosts=1, driver="fake", listen_port=0)
    ec = EmbeddedCloud(cfg)
    await ec.start()
    boot = ec.bootstrapped
    assert boot is not None and boot.generated_password
    path = state / "clouds.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cloud: dict[str, Any] = yaml.safe_load(path.read_text())["clouds"]["ferry"]
    assert cloud["auth"] == {"auth_url": f"{ec.url}/identity/v3", "username": "admin",
                             "password": boot.generated_password, "project_name": "admin",
                             "user_domain_name": "Default", "project_domain_name": "Default"}
    assert cloud["region_name"] == "RegionOne" and cloud["identity_api_version"] == 3
    await ec.stop()
    # A restart (another port) keeps the admin and its password, and says nothing new.
    ec = EmbeddedCloud(CloudConfig(state_dir=state, hosts=1, driver="fake", listen_port=0))
    await ec.start()
    try:
        assert ec.bootstrapped is not None and ec.bootstrapped.generated_password is None
        cloud = yaml.safe_load(path.read_text())["clouds"]["ferry"]
        assert cloud["auth"]["auth_url"] == f"{ec.url}/identity/v3"
        assert cloud["auth"]["password"] == boot.generated_password
        async with httpx.AsyncClient(base_url=ec.url) as api:
            await Identity(api).login("admin", boot.generated_password, "admin")
    finally:
        await ec.stop()


def test_insecure_no_auth_stays_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(InsecureBindRefused):
        EmbeddedCloud(CloudConfig(state_dir=tmp_path, listen_host="0.0.0.0",
                                  insecure_no_auth=True))
    # Authentication on: any address is allowed.
    EmbeddedCloud(CloudConfig(state_dir=tmp_path, listen_host="0.0.0.0"))


async def test_service_token_only_reads_images(idc: tuple[EmbeddedCloud, Identity]) -> None:
    ec, ident = idc
    h = {"X-Auth-Token": ec.service_token}
    r = await ident.api.get("/image/v2/images/00000000-0000-0000-0000-000000000000", headers=h)
    assert r.status_code == 404  # allowed to ask, the image just does not exist
    for method, path in (("GET", "/compute/v2.1/servers"), ("GET", "/image/v2/images"),
                         ("POST", "/image/v2/images"), ("GET", f"{V3}/users")):
        r = await ident.api.request(method, path, headers=h)
        assert r.status_code == 401, (method, path, r.status_code)


async def test_list_filters_and_updates_of_named_resources(
        idc: tuple[EmbeddedCloud, Identity]) -> None:
    _, ident = idc
    api, h = ident.api, ident.h()
    r = await api.post(f"{V3}/domains", headers=h, json={"domain": {"name": "d-filter"}})
    did = r.json()["domain"]["id"]
    r = await api.post(f"{V3}/projects", headers=h,
                       json={"project": {"name": "p-off", "domain_id": did, "enabled": False}})
    off = r.json()["project"]["id"]
    on = await ident.project("p-on")

    async def names(kind: str, **params: str) -> list[str]:
        r = await api.get(f"{V3}/{kind}", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [x["name"] for x in r.json()[kind]]

    assert await names("projects", domain_id=did) == ["p-off"]
    assert await names("projects", name="p-on") == ["p-on"]
    off_names = await names("projects", enabled="false")
    assert "p-off" in off_names and "p-on" not in off_names
    assert "d-filter" in await names("domains", enabled="true")
    assert await names("roles", name="reader", enabled="true") == ["reader"]
    assert await names("users", name="nobody") == []
    # An update changes name and description, keeps what it does not name.
    r = await api.patch(f"{V3}/projects/{on}", headers=h,
                        json={"project": {"description": "now described"}})
    assert r.json()["project"]["name"] == "p-on"
    assert r.json()["project"]["description"] == "now described"
    r = await api.patch(f"{V3}/domains/{did}", headers=h,
                        json={"domain": {"name": "d-renamed", "enabled": False}})
    assert (r.json()["domain"]["name"], r.json()["domain"]["enabled"]) == ("d-renamed", False)
    r = await api.patch(f"{V3}/projects/{off}", headers=h, json={"project": {"enabled": 1}})
    _keystone_error(r, 400)
    assert (await api.get(f"{V3}/projects/{off}", headers=h)).json()["project"]["enabled"] \
        is False
