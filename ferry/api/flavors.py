"""/flavors: list, show, create (200, as Nova), delete, extra specs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from ferry.api import lookups
from ferry.api.body import json_body, require_dict
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import BadRequest, Conflict, NotFound
from ferry.api.servers import base_url
from ferry.api.views import flavor_view, link
from ferry.db.models import Flavor

router = APIRouter()


def _int(body: dict[str, Any], key: str, minimum: int, default: int | None = None) -> int:
    raw = body.get(key, default)
    if raw == "" and default is not None:
        raw = default
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for field/attribute {key}.") from None
    if value < minimum:
        raise BadRequest(f"Invalid input for field/attribute {key}. Value: {raw}.")
    return value


@router.get("/flavors")
async def list_flavors(request: Request, d: ApiDeps = Depends(deps)) -> dict[str, Any]:
    async with d.sessions() as s:
        rows = (await s.execute(select(Flavor).where(Flavor.deleted.is_(False))
                                .order_by(Flavor.flavorid))).scalars()
        base = base_url(request)
        return {"flavors": [{"id": f.flavorid, "name": f.name,
                             "links": link(base, "flavors", f.flavorid)} for f in rows]}


@router.get("/flavors/detail")
async def list_flavors_detail(request: Request, d: ApiDeps = Depends(deps),
                              ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        rows = (await s.execute(select(Flavor).where(Flavor.deleted.is_(False))
                                .order_by(Flavor.flavorid))).scalars()
        return {"flavors": [flavor_view(f, ctx, base_url(request)) for f in rows]}


@router.get("/flavors/{flavor_id}")
async def show_flavor(flavor_id: str, request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        f = (await s.execute(select(Flavor).where(Flavor.flavorid == flavor_id))
             ).scalar_one_or_none()
    if f is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return {"flavor": flavor_view(f, ctx, base_url(request))}


@router.post("/flavors")
async def create_flavor(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("os_compute_api:os-flavor-manage:create")
    body = require_dict(await json_body(request), "flavor")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("Invalid input for field/attribute name.")
    flavorid = str(body.get("id") or "") or None
    public = str(body.get("os-flavor-access:is_public", True)).lower() not in ("false", "0")
    async with d.sessions() as s, s.begin():
        taken = (await s.execute(select(Flavor).where(
            (Flavor.name == name) | (Flavor.flavorid == (flavorid or ""))))).scalars().first()
        if taken is not None:
            raise Conflict(f"Flavor with name {name} or id {flavorid} already exists.")
        f = Flavor(name=name, vcpus=_int(body, "vcpus", 1), memory_mb=_int(body, "ram", 1),
                   root_gb=_int(body, "disk", 0),
                   ephemeral_gb=_int(body, "OS-FLV-EXT-DATA:ephemeral", 0, 0),
                   swap=_int(body, "swap", 0, 0), is_public=public, extra_specs={},
                   flavorid=flavorid or "")
        s.add(f)
        await s.flush()
        if not f.flavorid:
            f.flavorid = str(f.id)
    return {"flavor": flavor_view(f, ctx, base_url(request))}


@router.delete("/flavors/{flavor_id}")
async def delete_flavor(flavor_id: str, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> Response:
    ctx.authorize("os_compute_api:os-flavor-manage:delete")
    async with d.sessions() as s, s.begin():
        f = await lookups.flavor_ref(s, flavor_id, not_found=NotFound)
        # Kept as a row (deleted) so servers and migrations still resolve it.
        f.deleted = True
        f.name = f"{f.name}-deleted-{f.id}"
    return Response(status_code=202)


@router.get("/flavors/{flavor_id}/os-extra_specs")
async def get_extra_specs(flavor_id: str, d: ApiDeps = Depends(deps),
                          ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("os_compute_api:os-flavor-extra-specs:index")
    async with d.sessions() as s:
        f = await lookups.flavor_ref(s, flavor_id, not_found=NotFound)
        return {"extra_specs": dict(f.extra_specs or {})}


@router.post("/flavors/{flavor_id}/os-extra_specs")
async def set_extra_specs(flavor_id: str, request: Request, d: ApiDeps = Depends(deps),
                          ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("os_compute_api:os-flavor-extra-specs:create")
    body = require_dict(await json_body(request), "extra_specs")
    async with d.sessions() as s, s.begin():
        f = await lookups.flavor_ref(s, flavor_id, not_found=NotFound)
        f.extra_specs = {**(f.extra_specs or {}), **{k: str(v) for k, v in body.items()}}
        return {"extra_specs": dict(f.extra_specs)}
