"""/servers: create, list, show, delete. Actions live in `server_actions`."""

from __future__ import annotations

import secrets
import uuid as uuidlib
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from ferry.api import lookups
from ferry.api.body import json_body, require_dict
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.dispatch import cast_to_conductor
from ferry.api.errors import BadRequest
from ferry.api.views import link, server_view
from ferry.db.models import Instance, InstanceAction

router = APIRouter()


def target(inst: Instance) -> dict[str, Any]:
    """The policy target of a server: its owner."""
    return {"project_id": inst.project_id, "user_id": inst.user_id}


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/compute"


@router.post("/servers", status_code=202)
async def create_server(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("os_compute_api:servers:create")
    body = require_dict(await json_body(request), "server")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise BadRequest("Invalid input for field/attribute name.")
    if "imageRef" not in body or "flavorRef" not in body:
        raise BadRequest("imageRef and flavorRef are required.")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadRequest("Invalid input for field/attribute metadata.")
    async with d.sessions() as s, s.begin():
        flavor = await lookups.flavor_ref(s, body["flavorRef"])
        image = await lookups.image_ref(s, body["imageRef"], ctx)
        inst = Instance(uuid=str(uuidlib.uuid4()), display_name=name, project_id=ctx.project_id,
                        user_id=ctx.user_id, vm_state="building", task_state="scheduling",
                        flavor_id=flavor.id, image_ref=image.id, metadata_=metadata,
                        availability_zone=body.get("availability_zone"))
        s.add(inst)
        s.add(InstanceAction(action="create", instance_uuid=inst.uuid,
                             request_id=ctx.request_id, user_id=ctx.user_id,
                             project_id=ctx.project_id))
    await cast_to_conductor(d, "build_server", {"instance_uuid": inst.uuid},
                undo={"vm_state": "deleted", "task_state": None, "deleted": True})
    return {"server": {"id": inst.uuid, "links": link(base_url(request), "servers", inst.uuid),
                       "adminPass": secrets.token_urlsafe(9), "OS-DCF:diskConfig": "MANUAL",
                       "security_groups": [{"name": "default"}]}}


async def _list(request: Request, d: ApiDeps, ctx: RequestContext, detail: bool
                ) -> dict[str, Any]:
    kind = "detail" if detail else "index"
    ctx.authorize(f"os_compute_api:servers:{kind}")
    q = select(Instance).where(Instance.deleted.is_(False)).order_by(Instance.created_at.desc())
    all_tenants = request.query_params.get("all_tenants") not in (None, "0", "false", "False")
    # As Nova: a caller not allowed all projects quietly gets its own.
    if not (all_tenants and ctx.can(f"os_compute_api:servers:{kind}:get_all_tenants")):
        q = q.where(Instance.project_id == ctx.project_id)
    if name := request.query_params.get("name"):
        q = q.where(Instance.display_name.contains(name))
    if host := request.query_params.get("host"):
        q = q.where(Instance.host == host)
    base = base_url(request)
    out = []
    async with d.sessions() as s:
        for inst in (await s.execute(q)).scalars():
            if detail:
                flavor = await lookups.flavor_by_id(s, inst.flavor_id)
                out.append(server_view(inst, flavor, ctx, base,
                                       await lookups.latest_fault(s, inst.uuid)))
            else:
                out.append({"id": inst.uuid, "name": inst.display_name,
                            "links": link(base, "servers", inst.uuid)})
    return {"servers": out}


@router.get("/servers")
async def list_servers(request: Request, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    return await _list(request, d, ctx, detail=False)


@router.get("/servers/detail")
async def list_servers_detail(request: Request, d: ApiDeps = Depends(deps),
                              ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    return await _list(request, d, ctx, detail=True)


@router.get("/servers/{server_id}")
async def show_server(server_id: str, request: Request, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        inst = await lookups.server(s, ctx, server_id)
        ctx.authorize("os_compute_api:servers:show", target(inst))
        flavor = await lookups.flavor_by_id(s, inst.flavor_id)
        fault = await lookups.latest_fault(s, inst.uuid)
    return {"server": server_view(inst, flavor, ctx, base_url(request), fault)}


@router.delete("/servers/{server_id}")
async def delete_server(server_id: str, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> Response:
    async with d.sessions() as s, s.begin():
        inst = await lookups.server(s, ctx, server_id)
        ctx.authorize("os_compute_api:servers:delete", target(inst))
        inst.task_state = "deleting"
        s.add(InstanceAction(action="delete", instance_uuid=inst.uuid,
                             request_id=ctx.request_id, user_id=ctx.user_id,
                             project_id=ctx.project_id))
    await cast_to_conductor(d, "delete_server", {"instance_uuid": inst.uuid},
                            undo={"task_state": None})
    return Response(status_code=204)
