"""GET /os-migrations (Nova), /servers/{id}/migrations (live only, so empty for
cold moves), and Ferry's own /ferry/v1/migrations with phase, steps and bytes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import or_, select

from ferry.api import lookups
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import BadRequest, NotFound
from ferry.api.servers import target
from ferry.api.views import ferry_migration_view, migration_view
from ferry.db.models import Migration

router = APIRouter()
ferry_router = APIRouter()

_FILTERS_259 = {"hidden", "host", "instance_uuid", "source_compute", "status",
                "migration_type", "limit", "marker", "changes-since", "changes-before",
                "user_id", "project_id"}


@router.get("/os-migrations")
async def list_migrations(request: Request, d: ApiDeps = Depends(deps),
                          ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    params = request.query_params
    rule = "os_compute_api:os-migrations:"
    ctx.authorize(rule + "index")
    # Nova 32: listing all projects or another one needs index:all_projects;
    # a manager passes ?project_id=<own project>. Host fields need index:host.
    project = params.get("project_id")
    if not project or project != ctx.project_id:
        ctx.authorize(rule + "index:all_projects")
    show_host = ctx.can(rule + "index:host")
    if ctx.version >= (2, 59):
        unknown = set(params) - _FILTERS_259
        if unknown:
            raise BadRequest(f"Additional properties are not allowed "
                             f"({', '.join(sorted(unknown))} were unexpected)")
    q = select(Migration).where(Migration.hidden.is_(False))
    if project:
        q = q.where(Migration.project_id == project)
    if v := params.get("user_id"):
        q = q.where(Migration.user_id == v)
    if v := params.get("instance_uuid"):
        q = q.where(Migration.instance_uuid == v)
    if v := params.get("status"):
        q = q.where(Migration.status == v)
    if v := params.get("source_compute"):
        q = q.where(Migration.source_compute == v)
    if v := params.get("host"):
        q = q.where(or_(Migration.source_compute == v, Migration.dest_compute == v))
    if v := params.get("migration_type"):
        q = q.where(Migration.migration_type == v)
    q = q.order_by(Migration.created_at.desc(), Migration.id.desc()) \
        if ctx.version >= (2, 59) else q.order_by(Migration.id)
    async with d.sessions() as s:
        rows = list((await s.execute(q)).scalars())
    if ctx.version >= (2, 59):
        if marker := params.get("marker"):
            ids = [m.uuid for m in rows]
            if marker not in ids:
                raise BadRequest(f"Marker {marker} could not be found.")
            rows = rows[ids.index(marker) + 1:]
        if limit := params.get("limit"):
            rows = rows[: int(limit)]
    return {"migrations": [migration_view(m, ctx, show_host=show_host) for m in rows]}


@router.get("/servers/{server_id}/migrations")
async def server_migrations(server_id: str, d: ApiDeps = Depends(deps),
                            ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        inst = await lookups.server(s, ctx, server_id)
    ctx.authorize("os_compute_api:servers:migrations:index", target(inst))
    return {"migrations": []}  # Nova lists in-progress live migrations only


@router.get("/servers/{server_id}/migrations/{migration_id}")
async def server_migration(server_id: str, migration_id: str, d: ApiDeps = Depends(deps),
                           ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        inst = await lookups.server(s, ctx, server_id)
    ctx.authorize("os_compute_api:servers:migrations:show", target(inst))
    raise NotFound(f"In-progress live migration {migration_id} is not found for server "
                   f"{server_id}.")


@ferry_router.get("/migrations")
async def ferry_list(request: Request, d: ApiDeps = Depends(deps),
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("ferry:migrations:index")
    q = select(Migration).order_by(Migration.id.desc())
    if not ctx.can("ferry:migrations:index:all_projects"):
        q = q.where(Migration.project_id == ctx.project_id)
    if v := request.query_params.get("instance_uuid"):
        q = q.where(Migration.instance_uuid == v)
    async with d.sessions() as s:
        return {"migrations": [ferry_migration_view(m) for m in (await s.execute(q)).scalars()]}


@ferry_router.get("/migrations/{ident}")
async def ferry_show(ident: str, d: ApiDeps = Depends(deps),
                     ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    q = select(Migration).where(Migration.id == int(ident)) if ident.isdigit() else \
        select(Migration).where(Migration.uuid == ident)
    async with d.sessions() as s:
        m = (await s.execute(q)).scalar_one_or_none()
    if m is None or (not ctx.is_admin and m.project_id != ctx.project_id):
        raise NotFound(f"Migration {ident} could not be found.")
    ctx.authorize("ferry:migrations:show", {"project_id": m.project_id, "user_id": m.user_id})
    return {"migration": ferry_migration_view(m)}
