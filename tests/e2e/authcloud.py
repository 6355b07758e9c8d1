"""An embedded cloud with Identity v3 on (not --insecure-no-auth), and helpers
that log in and make projects, users and role assignments through the API.

Used by the functional identity/policy/API tests (in process) and, for the
credentials, by the client end-to-end tests in this directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ferry.cmd.embedded import CloudConfig, EmbeddedCloud
from tests.support.cloud import fast_settings

ADMIN_PASSWORD = "s3cret-admin-pw"
V3 = "/identity/v3"


async def start_auth_cloud(tmp: Path, hosts: int = 2, token_ttl: float = 3600,
                           policy_file: Path | None = None, **settings: Any) -> EmbeddedCloud:
    cfg = CloudConfig(state_dir=tmp, hosts=hosts, driver="fake", listen_port=0,
                      insecure_no_auth=False, admin_password=ADMIN_PASSWORD,
                      token_ttl=token_ttl, policy_file=policy_file,
                      settings=fast_settings(**settings))
    cloud = EmbeddedCloud(cfg)
    await cloud.start()
    return cloud


def password_body(user: str, password: str, project: str | None = None,
                  domain: str = "Default") -> dict[str, Any]:
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": domain}, "password": password}}}}
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
    return {"auth": auth}


class Identity:
    """Speaks the identity API with an admin token, as tempest's dynamic credentials do."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.admin = ""

    async def login(self, user: str, password: str, project: str | None = None) -> str:
        r = await self.api.post(f"{V3}/auth/tokens",
                                json=password_body(user, password, project))
        assert r.status_code == 201, r.text
        token: str = r.headers["X-Subject-Token"]
        return token

    async def admin_login(self) -> str:
        self.admin = await self.login("admin", ADMIN_PASSWORD, "admin")
        return self.admin

    def h(self, token: str | None = None, version: str | None = None) -> dict[str, str]:
        out = {"X-Auth-Token": token or self.admin}
        if version:
            out["OpenStack-API-Version"] = f"compute {version}"
        return out

    async def project(self, name: str) -> str:
        r = await self.api.post(f"{V3}/projects", headers=self.h(),
                                json={"project": {"name": name, "domain_id": "default"}})
        assert r.status_code == 201, r.text
        pid: str = r.json()["project"]["id"]
        return pid

    async def role_id(self, name: str) -> str:
        r = await self.api.get(f"{V3}/roles", params={"name": name}, headers=self.h())
        assert r.status_code == 200, r.text
        rid: str = r.json()["roles"][0]["id"]
        return rid

    async def user(self, name: str, password: str, project_id: str, role: str) -> str:
        r = await self.api.post(f"{V3}/users", headers=self.h(), json={"user": {
            "name": name, "password": password, "domain_id": "default"}})
        assert r.status_code == 201, r.text
        uid: str = r.json()["user"]["id"]
        r = await self.api.put(f"{V3}/projects/{project_id}/users/{uid}/roles/"
                               f"{await self.role_id(role)}", headers=self.h())
        assert r.status_code == 204, r.text
        return uid
