"""First start: domain Default, the role chain, project `admin` and user
`admin` (role admin on it), like `keystone-manage bootstrap`; and the
`<state-dir>/clouds.yaml` that openstackclient and openstacksdk read.

Running it again changes nothing, except that an explicitly given admin
password resets the admin's password (as keystone-manage bootstrap does)
and clouds.yaml's auth_url follows the address the API listens on.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.identity_models import IdentityProject, IdentityUser
from ferry.identity import passwords, store

ADMIN = "admin"
CLOUD = "ferry"


@dataclass
class Bootstrapped:
    # Set only when Ferry chose the password now: print it once, it is not stored.
    generated_password: str | None
    # The admin password when known this run (generated or given), for clouds.yaml.
    password: str | None
    user_id: str
    project_id: str


async def bootstrap(sessions: async_sessionmaker[AsyncSession],
                    admin_password: str | None = None) -> Bootstrapped:
    generated = None
    async with sessions() as s, s.begin():
        await store.ensure_defaults(s)
        dom = store.DEFAULT_DOMAIN_ID
        project = await store.project(s, name=ADMIN, domain_id=dom)
        if project is None:
            project = IdentityProject(id=store.new_id(), name=ADMIN, domain_id=dom,
                                      description="Bootstrap project for the cloud admin")
            s.add(project)
        user = await store.user(s, name=ADMIN, domain_id=dom)
        password = admin_password
        if user is None:
            if password is None:
                password = generated = secrets.token_urlsafe(18)
            user = IdentityUser(id=store.new_id(), name=ADMIN, domain_id=dom,
                                password_hash=await asyncio.to_thread(
                                    passwords.hash_password, password),
                                default_project_id=project.id)
            s.add(user)
        elif password is not None:
            user.password_hash = await asyncio.to_thread(passwords.hash_password, password)
        await s.flush()
        admin = await store.role(s, name=ADMIN)
        assert admin is not None
        await store.grant(s, user.id, "project", project.id, admin.id)
    return Bootstrapped(generated_password=generated, password=password, user_id=user.id,
                        project_id=project.id)


def write_clouds_yaml(path: Path, api_url: str, password: str | None) -> None:
    """Create or update cloud `ferry` in clouds.yaml (mode 0600: it holds a password)."""
    data: dict[str, Any] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
    clouds = data.setdefault("clouds", {})
    cloud = clouds.setdefault(CLOUD, {})
    auth = cloud.setdefault("auth", {})
    auth.update({"auth_url": f"{api_url.rstrip('/')}/identity/v3", "username": ADMIN,
                 "project_name": ADMIN, "user_domain_name": store.DEFAULT_DOMAIN_NAME,
                 "project_domain_name": store.DEFAULT_DOMAIN_NAME})
    if password is not None:
        auth["password"] = password
    cloud.update({"region_name": "RegionOne", "identity_api_version": 3,
                  "interface": "public"})
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
