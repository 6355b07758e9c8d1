"""GET /servers/{id}/os-instance-actions[/{request_id}]."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from ferry.api import lookups
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import NotFound
from ferry.api.servers import target
from ferry.api.views import iso_us
from ferry.db.models import InstanceAction, InstanceActionEvent

router = APIRouter()


def _action(a: InstanceAction, ctx: RequestContext) -> dict[str, Any]:
    out: dict[str, Any] = {"action": a.action, "instance_uuid": a.instance_uuid,
                           "request_id": a.request_id, "user_id": a.user_id,
                           "project_id": a.project_id, "start_time": iso_us(a.start_time),
                           "message": a.message}
    if ctx.version >= (2, 58):
        out["updated_at"] = iso_us(a.updated_at)
    return out


@router.get("/servers/{server_id}/os-instance-actions")
async def list_actions(server_id: str, d: ApiDeps = Depends(deps),
                       ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        inst = await lookups.server(s, ctx, server_id)
        ctx.authorize("os_compute_api:os-instance-actions:list", target(inst))
        rows = (await s.execute(select(InstanceAction).where(
            InstanceAction.instance_uuid == inst.uuid).order_by(InstanceAction.id.desc())
        )).scalars()
        return {"instanceActions": [_action(a, ctx) for a in rows]}


@router.get("/servers/{server_id}/os-instance-actions/{request_id}")
async def show_action(server_id: str, request_id: str, d: ApiDeps = Depends(deps),
                      ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    async with d.sessions() as s:
        inst = await lookups.server(s, ctx, server_id)
        ctx.authorize("os_compute_api:os-instance-actions:show", target(inst))
        a = (await s.execute(select(InstanceAction).where(
            InstanceAction.instance_uuid == inst.uuid,
            InstanceAction.request_id == request_id))).scalar_one_or_none()
        if a is None:
            raise NotFound(f"Action for request_id {request_id} on instance {server_id} "
                           f"not found")
        events = (await s.execute(select(InstanceActionEvent).where(
            InstanceActionEvent.action_id == a.id).order_by(InstanceActionEvent.id))).scalars()
        out = _action(a, ctx)
        evs = []
        # Nova: tracebacks and hosts only for callers allowed "events".
        admin_events = ctx.can("os_compute_api:os-instance-actions:events", target(inst))
        for e in events:
            ev: dict[str, Any] = {"event": e.event, "start_time": iso_us(e.start_time),
                                  "finish_time": iso_us(e.finish_time), "result": e.result}
            if admin_events:
                ev["traceback"] = e.traceback
            if ctx.version >= (2, 62):
                ev["hostId"] = ""
                if admin_events:
                    ev["host"] = e.host
            evs.append(ev)
        out["events"] = evs
        return {"instanceAction": out}
