"""Identity v3 roles and role assignments: /v3/roles, grants on projects and
domains (`PUT /v3/projects/{p}/users/{u}/roles/{r}`), and /v3/role_assignments.

`effective` listings expand implied roles (admin > manager > member > reader)
the way tokens do. The four bootstrap roles cannot be deleted: policy depends
on them. To support group grants: add a target type and routes here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.api.body import json_body, require_dict
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import Forbidden, NotFound
from ferry.api.identity_admin import _changed, _commit, _get, _list, _str, links
from ferry.api.identity_auth import base
from ferry.db.identity_models import (
    IdentityAssignment,
    IdentityDomain,
    IdentityProject,
    IdentityRole,
    IdentityUser,
)
from ferry.identity import store

router = APIRouter()


def role_ref(r: IdentityRole, request: Request) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "domain_id": None, "description": r.description,
            "options": {}, "links": {"self": f"{base(request)}/identity/v3/roles/{r.id}"}}


@router.get("/v3/roles")
async def list_roles(request: Request, d: ApiDeps = Depends(deps),
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_roles", {})
    rows = await _list(d, request, IdentityRole, ("name",))
    return {"roles": [role_ref(r, request) for r in rows], "links": links(request, "roles")}


@router.get("/v3/roles/{role_id}")
async def show_role(role_id: str, request: Request, d: ApiDeps = Depends(deps),
                    ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:get_role", {})
    async with d.sessions() as s:
        return {"role": role_ref(await _get(s, IdentityRole, "role", role_id), request)}


@router.post("/v3/roles", status_code=201)
async def create_role(request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:create_role", {})
    body = require_dict(await json_body(request), "role")
    name = _str(body, "name", required=True)
    assert name is not None
    async with d.sessions() as s, s.begin():
        r = IdentityRole(id=store.new_id(), name=name,
                         description=str(body.get("description") or ""))
        s.add(r)
        await _commit(s, "role", name)
    return {"role": role_ref(r, request)}


@router.delete("/v3/roles/{role_id}")
async def delete_role(role_id: str, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:delete_role", {})
    async with d.sessions() as s, s.begin():
        r = await _get(s, IdentityRole, "role", role_id)
        if r.name in (*store.ROLE_CHAIN, "service"):
            raise Forbidden(f"Role {r.name} is a bootstrap role that policies depend on.")
        await s.execute(delete(IdentityAssignment).where(IdentityAssignment.role_id == r.id))
        await s.delete(r)
    _changed(d)
    return Response(status_code=204)


# -- grants ----------------------------------------------------------------------------

_TARGETS: dict[str, Any] = {"projects": (IdentityProject, "project"),
                            "domains": (IdentityDomain, "domain")}


async def _grant_parts(s: AsyncSession, kind: str, target_id: str, user_id: str,
                       role_id: str | None) -> tuple[str, IdentityRole | None]:
    if kind not in _TARGETS:
        raise NotFound("The resource could not be found.")
    model, ttype = _TARGETS[kind]
    await _get(s, model, ttype, target_id)
    await _get(s, IdentityUser, "user", user_id)
    role = await _get(s, IdentityRole, "role", role_id) if role_id else None
    return ttype, role


def _grant_q(ttype: str, target_id: str, user_id: str, role_id: str) -> Any:
    return (IdentityAssignment.user_id == user_id, IdentityAssignment.target_type == ttype,
            IdentityAssignment.target_id == target_id, IdentityAssignment.role_id == role_id)


@router.put("/v3/{kind}/{target_id}/users/{user_id}/roles/{role_id}", status_code=204)
async def create_grant(kind: str, target_id: str, user_id: str, role_id: str,
                       d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:create_grant", {})
    async with d.sessions() as s, s.begin():
        ttype, _ = await _grant_parts(s, kind, target_id, user_id, role_id)
        await store.grant(s, user_id, ttype, target_id, role_id)
    _changed(d)
    return Response(status_code=204)


@router.api_route("/v3/{kind}/{target_id}/users/{user_id}/roles/{role_id}",
                  methods=["GET", "HEAD"])
async def check_grant(kind: str, target_id: str, user_id: str, role_id: str,
                      d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:check_grant", {})
    async with d.sessions() as s:
        ttype, _ = await _grant_parts(s, kind, target_id, user_id, role_id)
        row = (await s.execute(select(IdentityAssignment).where(
            *_grant_q(ttype, target_id, user_id, role_id)))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"Could not find role assignment with role: {role_id}, user or group: "
                       f"{user_id}, {ttype}: {target_id}.")
    return Response(status_code=204)


@router.delete("/v3/{kind}/{target_id}/users/{user_id}/roles/{role_id}", status_code=204)
async def revoke_grant(kind: str, target_id: str, user_id: str, role_id: str,
                       d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("identity:revoke_grant", {})
    async with d.sessions() as s, s.begin():
        ttype, _ = await _grant_parts(s, kind, target_id, user_id, role_id)
        done = await s.execute(delete(IdentityAssignment).where(
            *_grant_q(ttype, target_id, user_id, role_id)))
        if not done.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"Could not find role assignment with role: {role_id}.")
    _changed(d)
    return Response(status_code=204)


@router.get("/v3/{kind}/{target_id}/users/{user_id}/roles")
async def list_grants(kind: str, target_id: str, user_id: str, request: Request,
                      d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_grants", {})
    async with d.sessions() as s:
        ttype, _ = await _grant_parts(s, kind, target_id, user_id, None)
        rows = (await s.execute(select(IdentityRole).join(
            IdentityAssignment, IdentityAssignment.role_id == IdentityRole.id).where(
            IdentityAssignment.user_id == user_id, IdentityAssignment.target_type == ttype,
            IdentityAssignment.target_id == target_id).order_by(IdentityRole.name))).scalars()
        return {"roles": [role_ref(r, request) for r in rows],
                "links": links(request, f"{kind}/{target_id}/users/{user_id}/roles")}


# -- role_assignments ------------------------------------------------------------------

@router.get("/v3/role_assignments")
async def list_role_assignments(request: Request, d: ApiDeps = Depends(deps),
                                ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("identity:list_role_assignments", {})
    qp = request.query_params
    q = select(IdentityAssignment).order_by(IdentityAssignment.id)
    if v := qp.get("user.id"):
        q = q.where(IdentityAssignment.user_id == v)
    for ttype in ("project", "domain"):
        if v := qp.get(f"scope.{ttype}.id"):
            q = q.where(IdentityAssignment.target_type == ttype,
                        IdentityAssignment.target_id == v)
    effective = "effective" in qp
    names = qp.get("include_names") not in (None, "0", "false", "False")
    want_role = qp.get("role.id")
    root = f"{base(request)}/identity/v3"
    out = []
    async with d.sessions() as s:
        roles = {r.id: r for r in (await s.execute(select(IdentityRole))).scalars()}
        by_name = {r.name: r for r in roles.values()}
        for a in (await s.execute(q)).scalars():
            granted = roles.get(a.role_id)
            if granted is None:
                continue
            implied = sorted(store.expand({granted.name})) if effective else [granted.name]
            for rname in implied:
                r = by_name.get(rname)
                if r is None or (want_role and r.id != want_role):
                    continue
                item: dict[str, Any] = {
                    "role": {"id": r.id}, "user": {"id": a.user_id},
                    "scope": {a.target_type: {"id": a.target_id}},
                    "links": {"assignment": f"{root}/{a.target_type}s/{a.target_id}/users/"
                                            f"{a.user_id}/roles/{a.role_id}"}}
                if r.id != granted.id:
                    item["links"]["prior_role"] = f"{root}/roles/{granted.id}"
                if names:
                    await _add_names(s, item, r, a)
                out.append(item)
    return {"role_assignments": out, "links": links(request, "role_assignments")}


async def _add_names(s: AsyncSession, item: dict[str, Any], r: IdentityRole,
                     a: IdentityAssignment) -> None:
    item["role"]["name"] = r.name
    u = await s.get(IdentityUser, a.user_id)
    if u is not None:
        dom = await s.get(IdentityDomain, u.domain_id)
        item["user"].update(name=u.name, domain={"id": u.domain_id,
                                                 "name": dom.name if dom else ""})
    target: Any = await s.get(IdentityProject if a.target_type == "project"
                              else IdentityDomain, a.target_id)
    if target is not None:
        item["scope"][a.target_type]["name"] = target.name
        if a.target_type == "project":
            dom = await s.get(IdentityDomain, target.domain_id)
            item["scope"]["project"]["domain"] = {"id": target.domain_id,
                                                  "name": dom.name if dom else ""}
