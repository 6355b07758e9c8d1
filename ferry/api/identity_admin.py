"""Identity v3 administration: domains, projects and users (create, list,
show, update, delete), as tempest's dynamic credentials and `openstack
project|user|domain` use them. Roles and assignments are in identity_roles.py.

Every write clears the token cache, so a disabled or deleted user, project or
domain stops working at once; deleting or disabling one also revokes its
tokens. To add a resource: its view and routes here, its rules in
ferry/policy/rules.py (checked with `ctx.authorize`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.api.body import json_body, require_dict
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from ferry.api.identity_auth import base, project_ref
from ferry.db.identity_models import (
    IdentityAssignment,
    IdentityDomain,
    IdentityProject,
    IdentityUser,
)
from ferry.identity import passwords, store

router = APIRouter()


def links(request: Request, kind: str) -> dict[str, Any]:
    return {"self": f"{base(request)}/identity/v3/{kind}", "previous": None, "next": None}


def domain_ref(x: IdentityDomain, request: Request) -> dict[str, Any]:
    return {"id": x.id, "name": x.name, "description": x.description, "enabled": x.enabled,
            "tags": [], "options": {},
            "links": {"self": f"{base(request)}/identity/v3/domains/{x.id}"}}


def user_ref(u: IdentityUser, request: Request) -> dict[str, Any]:
    out = {**(u.extra or {}), "id": u.id, "name": u.name, "domain_id": u.domain_id,
           "enabled": u.enabled, "password_expires_at": None, "options": {},
           "links": {"self": f"{base(request)}/identity/v3/users/{u.id}"}}
    if u.default_project_id:
        out["default_project_id"] = u.default_project_id
    if u.description:
        out["description"] = u.description
    if u.email:
        out["email"] = u.email
    return out


def _str(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > 255:
        raise BadRequest(f"Invalid input for field '{key}': expecting a non-empty string.")
    return v


def _bool(body: dict[str, Any], key: str) -> bool | None:
    v = body.get(key)
    if v is not None and not isinstance(v, bool):
        raise BadRequest(f"Invalid input for field '{key}': expecting a boolean.")
    return v


def _changed(d: ApiDeps) -> None:
    assert d.tokens is not None
    d.tokens.invalidate()


async def _commit(s: AsyncSession, kind: str, name: str) -> None:
    """Flush inside the caller's transaction; a duplicate name is Keystone's 409."""
    try:
        await s.flush()
    except IntegrityError:
        raise Conflict(f"Conflict occurred attempting to store {kind} - Duplicate entry "
                       f"found with name {name}.") from None


async def _get(s: AsyncSession, model: Any, kind: str, ident: str) -> Any:
    row = await s.get(model, ident)
    if row is None:
        raise NotFound(f"Could not find {kind}: {ident}.")
    return row


async def _list(d: ApiDeps, request: Request, model: Any, filters: tuple[str, ...]) -> list[Any]:
    """Rows of `model` by name, narrowed by the query parameters Keystone allows."""
    q = select(model).order_by(model.name)
    for key in filters:
        if value := request.query_params.get(key):
            q = q.where(getattr(model, key) == value)
    en = request.query_params.get("enabled")
    if en is not None and hasattr(model, "enabled"):
        q = q.where(model.enabled.is_(en.lower() not in ("0", "false")))
    async with d.sessions() as s:
        return list((await s.execute(q)).scalars())


def _update_named(x: Any, body: dict[str, Any]) -> bool | None:
    """Apply name and description from a PATCH body; return its `enabled`, if any."""
    x.name = _str(body, "name") or x.name
    if "description" in body:
        x.description = str(body["description"] or "")
    return _bool(body, "enabled")


# -- domains ---------------------------------------------------------------------------

@router.get("/v3/domains")
async def list_domains(request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_domains", {})
    rows = await _list(d, request, IdentityDomain, ("name",))
    return {"domains": [domain_ref(x, request) for x in rows],
            "links": links(request, "domains")}


@router.get("/v3/domains/{domain_id}")
async def show_domain(domain_id: str, request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:get_domain", {"target.domain.id": domain_id})
    async with d.sessions() as s:
        return {"domain": domain_ref(await _get(s, IdentityDomain, "domain", domain_id),
                                     request)}


@router.post("/v3/domains", status_code=201)
async def create_domain(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:create_domain", {})
    body = require_dict(await json_body(request), "domain")
    name = _str(body, "name", required=True)
    assert name is not None
    async with d.sessions() as s, s.begin():
        x = IdentityDomain(id=store.new_id(), name=name,
                           description=str(body.get("description") or ""),
                           enabled=_bool(body, "enabled") is not False)
        s.add(x)
        await _commit(s, "domain", name)
    return {"domain": domain_ref(x, request)}


@router.patch("/v3/domains/{domain_id}")
async def update_domain(domain_id: str, request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:update_domain", {"target.domain.id": domain_id})
    body = require_dict(await json_body(request), "domain")
    async with d.sessions() as s, s.begin():
        x = await _get(s, IdentityDomain, "domain", domain_id)
        if (en := _update_named(x, body)) is not None:
            if not en and x.id == store.DEFAULT_DOMAIN_ID:
                raise Forbidden("The default domain cannot be disabled.")
            x.enabled = en
        await _commit(s, "domain", x.name)
    _changed(d)
    return {"domain": domain_ref(x, request)}


@router.delete("/v3/domains/{domain_id}")
async def delete_domain(domain_id: str, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:delete_domain", {"target.domain.id": domain_id})
    async with d.sessions() as s, s.begin():
        x = await _get(s, IdentityDomain, "domain", domain_id)
        if x.enabled or x.id == store.DEFAULT_DOMAIN_ID:
            raise Forbidden("Cannot delete a domain that is enabled, please disable it first.")
        # Keystone deletes what the domain holds with it.
        pids = select(IdentityProject.id).where(IdentityProject.domain_id == x.id)
        uids = select(IdentityUser.id).where(IdentityUser.domain_id == x.id)
        await s.execute(delete(IdentityAssignment).where(or_(
            IdentityAssignment.target_id == x.id, IdentityAssignment.target_id.in_(pids),
            IdentityAssignment.user_id.in_(uids))))
        await s.execute(delete(IdentityProject).where(IdentityProject.domain_id == x.id))
        await s.execute(delete(IdentityUser).where(IdentityUser.domain_id == x.id))
        await s.delete(x)
    _changed(d)
    return Response(status_code=204)


# -- projects --------------------------------------------------------------------------

@router.get("/v3/projects")
async def list_projects(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_projects", {})
    rows = await _list(d, request, IdentityProject, ("name", "domain_id"))
    return {"projects": [project_ref(p, request) for p in rows],
            "links": links(request, "projects")}


@router.get("/v3/projects/{project_id}")
async def show_project(project_id: str, request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:get_project", {"target.project.id": project_id})
    async with d.sessions() as s:
        return {"project": project_ref(await _get(s, IdentityProject, "project", project_id),
                                       request)}


@router.post("/v3/projects", status_code=201)
async def create_project(request: Request, d: ApiDeps = Depends(deps),
                         ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:create_project", {})
    body = require_dict(await json_body(request), "project")
    name = _str(body, "name", required=True)
    assert name is not None
    dom_id = _str(body, "domain_id") or ctx.project_domain_id or store.DEFAULT_DOMAIN_ID
    async with d.sessions() as s, s.begin():
        await _get(s, IdentityDomain, "domain", dom_id)
        p = IdentityProject(id=store.new_id(), name=name, domain_id=dom_id,
                            description=str(body.get("description") or ""),
                            enabled=_bool(body, "enabled") is not False)
        s.add(p)
        await _commit(s, "project", name)
    return {"project": project_ref(p, request)}


@router.patch("/v3/projects/{project_id}")
async def update_project(project_id: str, request: Request, d: ApiDeps = Depends(deps),
                         ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:update_project", {"target.project.id": project_id})
    body = require_dict(await json_body(request), "project")
    async with d.sessions() as s, s.begin():
        p = await _get(s, IdentityProject, "project", project_id)
        if (en := _update_named(p, body)) is not None:
            p.enabled = en
        await _commit(s, "project", p.name)
    _changed(d)
    return {"project": project_ref(p, request)}


@router.delete("/v3/projects/{project_id}")
async def delete_project(project_id: str, d: ApiDeps = Depends(deps),
                         ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:delete_project", {"target.project.id": project_id})
    async with d.sessions() as s, s.begin():
        p = await _get(s, IdentityProject, "project", project_id)
        await s.execute(delete(IdentityAssignment).where(
            IdentityAssignment.target_type == "project", IdentityAssignment.target_id == p.id))
        await s.delete(p)
    assert d.tokens is not None
    await d.tokens.revoke_for(project_id=project_id)
    return Response(status_code=204)


# -- users -----------------------------------------------------------------------------

_USER_KEYS = {"name", "password", "domain_id", "enabled", "default_project_id",
              "description", "email", "options"}


@router.get("/v3/users")
async def list_users(request: Request, d: ApiDeps = Depends(deps),
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_users", {})
    rows = await _list(d, request, IdentityUser, ("name", "domain_id"))
    return {"users": [user_ref(u, request) for u in rows], "links": links(request, "users")}


@router.get("/v3/users/{user_id}")
async def show_user(user_id: str, request: Request, d: ApiDeps = Depends(deps),
                    ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:get_user", {"target.user.id": user_id})
    async with d.sessions() as s:
        return {"user": user_ref(await _get(s, IdentityUser, "user", user_id), request)}


@router.get("/v3/users/{user_id}/projects")
async def list_user_projects(user_id: str, request: Request, d: ApiDeps = Depends(deps),
                             ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_user_projects", {"target.user.id": user_id})
    async with d.sessions() as s:
        await _get(s, IdentityUser, "user", user_id)
        rows = await store.projects_of(s, user_id)
    return {"projects": [project_ref(p, request) for p in rows],
            "links": links(request, f"users/{user_id}/projects")}


@router.post("/v3/users", status_code=201)
async def create_user(request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:create_user", {})
    body = require_dict(await json_body(request), "user")
    name = _str(body, "name", required=True)
    assert name is not None
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        raise BadRequest("Invalid input for field 'password': expecting a string.")
    dom_id = _str(body, "domain_id") or ctx.project_domain_id or store.DEFAULT_DOMAIN_ID
    hashed = await asyncio.to_thread(passwords.hash_password, password) if password else ""
    async with d.sessions() as s, s.begin():
        await _get(s, IdentityDomain, "domain", dom_id)
        u = IdentityUser(id=store.new_id(), name=name, domain_id=dom_id, password_hash=hashed,
                         enabled=_bool(body, "enabled") is not False,
                         default_project_id=_str(body, "default_project_id"),
                         description=str(body.get("description") or ""),
                         email=_str(body, "email"),
                         # Keystone keeps unknown attributes (tempest sends project_id).
                         extra={k: v for k, v in body.items() if k not in _USER_KEYS})
        s.add(u)
        await _commit(s, "user", name)
    return {"user": user_ref(u, request)}


@router.patch("/v3/users/{user_id}")
async def update_user(user_id: str, request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:update_user", {"target.user.id": user_id})
    body = require_dict(await json_body(request), "user")
    revoke = False
    hashed = None
    if isinstance(body.get("password"), str):
        hashed = await asyncio.to_thread(passwords.hash_password, body["password"])
    async with d.sessions() as s, s.begin():
        u = await _get(s, IdentityUser, "user", user_id)
        u.name = _str(body, "name") or u.name
        if hashed is not None:
            u.password_hash, revoke = hashed, True
        if (en := _bool(body, "enabled")) is not None:
            revoke = revoke or (u.enabled and not en)
            u.enabled = en
        for key in ("description", "email", "default_project_id"):
            if key in body:
                setattr(u, key, body[key] or ("" if key == "description" else None))
        u.extra = {**(u.extra or {}), **{k: v for k, v in body.items() if k not in _USER_KEYS}}
        await _commit(s, "user", u.name)
    assert d.tokens is not None
    if revoke:
        await d.tokens.revoke_for(user_id=user_id)
    _changed(d)
    return {"user": user_ref(u, request)}


@router.post("/v3/users/{user_id}/password", status_code=204)
async def change_password(user_id: str, request: Request, d: ApiDeps = Depends(deps),
                          ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:change_password", {"target.user.id": user_id})
    body = require_dict(await json_body(request), "user")
    new, old = body.get("password"), body.get("original_password")
    if not isinstance(new, str) or not new or not isinstance(old, str):
        raise BadRequest("Invalid input: 'password' and 'original_password' are required.")
    async with d.sessions() as s:
        u = await _get(s, IdentityUser, "user", user_id)
    if not await asyncio.to_thread(passwords.verify, u.password_hash, old):
        raise Unauthorized("The request you have made requires authentication.")
    hashed = await asyncio.to_thread(passwords.hash_password, new)
    async with d.sessions() as s, s.begin():
        row = await _get(s, IdentityUser, "user", user_id)
        row.password_hash = hashed
    assert d.tokens is not None
    await d.tokens.revoke_for(user_id=user_id)
    return Response(status_code=204)


@router.delete("/v3/users/{user_id}")
async def delete_user(user_id: str, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:delete_user", {"target.user.id": user_id})
    async with d.sessions() as s, s.begin():
        u = await _get(s, IdentityUser, "user", user_id)
        await s.execute(delete(IdentityAssignment).where(IdentityAssignment.user_id == u.id))
        await s.delete(u)
    assert d.tokens is not None
    await d.tokens.revoke_for(user_id=user_id)
    return Response(status_code=204)

