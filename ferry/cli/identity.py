"""`ferry user|project|role`: manage identities through the Identity v3 API.

Credentials: FERRY_TOKEN if set (with FERRY_URL), else cloud `ferry` (or
$OS_CLOUD) in $OS_CLIENT_CONFIG_FILE or ./state/clouds.yaml, the file
`ferry up` writes. To add a command: a function on the right Typer app that
calls `_client()` and the /identity/v3 API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from ferry.cli.client import ApiFailure, FerryClient

console = Console()
user = typer.Typer(help="Identity users.", no_args_is_help=True)
project = typer.Typer(help="Identity projects.", no_args_is_help=True)
role = typer.Typer(help="Roles and role assignments.", no_args_is_help=True)
V3 = "/identity/v3"


def _client() -> FerryClient:
    if os.environ.get("FERRY_TOKEN"):
        return FerryClient()
    return FerryClient(*login_from_clouds_yaml())


def login_from_clouds_yaml() -> tuple[str, str]:
    """(API base URL, token) from cloud $OS_CLOUD (default `ferry`) in
    $OS_CLIENT_CONFIG_FILE (default ./state/clouds.yaml). Any `ferry` command
    can use it to talk to a cloud with authentication on."""
    path = Path(os.environ.get("OS_CLIENT_CONFIG_FILE") or "state/clouds.yaml")
    if not path.exists():
        raise ApiFailure(0, f"no credentials: set FERRY_TOKEN or OS_CLIENT_CONFIG_FILE "
                            f"({path} does not exist)")
    cloud = yaml.safe_load(path.read_text())["clouds"][os.environ.get("OS_CLOUD", "ferry")]
    auth = cloud["auth"]
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": auth["username"], "domain": {"name": auth.get("user_domain_name", "Default")},
        "password": auth["password"]}}}, "scope": {"project": {
            "name": auth["project_name"],
            "domain": {"name": auth.get("project_domain_name", "Default")}}}}}
    try:
        r = httpx.post(f"{auth['auth_url']}/auth/tokens?nocatalog", json=body, timeout=30)
    except httpx.HTTPError as exc:
        raise ApiFailure(0, f"cannot reach {auth['auth_url']}: {exc}") from exc
    if r.status_code != 201:
        raise ApiFailure(r.status_code, "login with clouds.yaml failed")
    base = auth["auth_url"].rsplit("/identity", 1)[0]
    return base, r.headers["X-Subject-Token"]


def _find(c: FerryClient, kind: str, ref: str) -> dict[str, Any]:
    """By id, else by name (what `openstack` does)."""
    try:
        found: dict[str, Any] = c.get(f"{V3}/{kind}s/{ref}")[kind]
        return found
    except ApiFailure as exc:
        if exc.status != 404:
            raise
    rows = c.get(f"{V3}/{kind}s", params={"name": ref})[f"{kind}s"]
    if len(rows) != 1:
        raise ApiFailure(404, f"No {kind} with a name or ID of '{ref}' exists.")
    return dict(rows[0])


def _table(rows: list[dict[str, Any]], *cols: str) -> None:
    t = Table(*cols)
    for r in rows:
        t.add_row(*(str(r.get(c, "")) for c in cols))
    console.print(t)


@project.command("list")
def project_list() -> None:
    _table(_client().get(f"{V3}/projects")["projects"], "id", "name", "domain_id", "enabled")


@project.command("create")
def project_create(name: str, description: str = typer.Option("", help="free text")) -> None:
    p = _client().request("POST", f"{V3}/projects", json={"project": {
        "name": name, "description": description}}).json()["project"]
    console.print(f"project {p['name']} created: {p['id']}")


@project.command("delete")
def project_delete(name: str) -> None:
    c = _client()
    c.request("DELETE", f"{V3}/projects/{_find(c, 'project', name)['id']}")
    console.print(f"project {name} deleted")


@user.command("list")
def user_list() -> None:
    _table(_client().get(f"{V3}/users")["users"], "id", "name", "domain_id", "enabled")


@user.command("create")
def user_create(
    name: str,
    password: str = typer.Option(..., prompt=True, hide_input=True,
                                 confirmation_prompt=True),
    project_name: str | None = typer.Option(None, "--project",
                                            help="grant --role on this project"),
    role_name: str = typer.Option("member", "--role", help="admin, manager, member, reader"),
) -> None:
    c = _client()
    u = c.request("POST", f"{V3}/users", json={"user": {"name": name, "password": password}}
                  ).json()["user"]
    console.print(f"user {u['name']} created: {u['id']}")
    if project_name:
        _grant(c, "PUT", role_name, u["id"], project_name)
        console.print(f"role {role_name} granted on project {project_name}")


@user.command("delete")
def user_delete(name: str) -> None:
    c = _client()
    c.request("DELETE", f"{V3}/users/{_find(c, 'user', name)['id']}")
    console.print(f"user {name} deleted (its tokens are revoked)")


def _grant(c: FerryClient, method: str, role_name: str, user_ref: str,
           project_ref: str) -> None:
    r, u, p = (_find(c, "role", role_name), _find(c, "user", user_ref),
               _find(c, "project", project_ref))
    c.request(method, f"{V3}/projects/{p['id']}/users/{u['id']}/roles/{r['id']}")


@role.command("list")
def role_list() -> None:
    _table(_client().get(f"{V3}/roles")["roles"], "id", "name")


@role.command("add")
def role_add(role_name: str, user_name: str = typer.Option(..., "--user"),
             project_name: str = typer.Option(..., "--project")) -> None:
    _grant(_client(), "PUT", role_name, user_name, project_name)
    console.print(f"role {role_name} granted to {user_name} on {project_name}")


@role.command("remove")
def role_remove(role_name: str, user_name: str = typer.Option(..., "--user"),
                project_name: str = typer.Option(..., "--project")) -> None:
    _grant(_client(), "DELETE", role_name, user_name, project_name)
    console.print(f"role {role_name} removed from {user_name} on {project_name}")


@role.command("assignments")
def role_assignments(user_name: str | None = typer.Option(None, "--user")) -> None:
    c = _client()
    params = {"include_names": "1"}
    if user_name:
        params["user.id"] = _find(c, "user", user_name)["id"]
    rows = c.get(f"{V3}/role_assignments", params=params)["role_assignments"]
    _table([{"role": a["role"].get("name"), "user": a["user"].get("name"),
             "scope": next(iter(a["scope"].values())).get("name")} for a in rows],
           "role", "user", "scope")
