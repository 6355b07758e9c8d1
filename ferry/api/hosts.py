"""/os-hypervisors and /os-services: the compute hosts as Nova shows them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import NotFound
from ferry.api.views import iso_us
from ferry.db.models import Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.hoststate import is_up

router = APIRouter()


def _state(d: ApiDeps, svc: Service) -> str:
    up = is_up(svc.last_seen_up, svc.forced_down, utcnow(), d.settings.service_down_time)
    return "up" if up else "down"


async def _services(d: ApiDeps, binary: str | None = None) -> list[Service]:
    q = select(Service).order_by(Service.id)
    if binary:
        q = q.where(Service.binary == binary)
    async with d.sessions() as s:
        return list((await s.execute(q)).scalars())


@router.get("/os-services")
async def list_services(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("os_compute_api:os-services:list")
    binary = request.query_params.get("binary")
    if binary == "nova-compute":
        binary = "ferry-compute"
    host = request.query_params.get("host")
    out = []
    for svc in await _services(d, binary):
        if host and svc.host != host:
            continue
        row: dict[str, Any] = {
            "id": svc.uuid if ctx.version >= (2, 53) else svc.id, "binary": svc.binary,
            "host": svc.host, "zone": svc.zone,
            "status": "disabled" if svc.disabled else "enabled", "state": _state(d, svc),
            "updated_at": iso_us(svc.updated_at or svc.last_seen_up),
            "disabled_reason": svc.disabled_reason}
        if ctx.version >= (2, 11):
            row["forced_down"] = svc.forced_down
        out.append(row)
    return {"services": out}


async def _hypervisors(request: Request, d: ApiDeps, ctx: RequestContext, detail: bool
                       ) -> list[dict[str, Any]]:
    ctx.authorize("os_compute_api:os-hypervisors:list-detail" if detail
                  else "os_compute_api:os-hypervisors:list")
    async with d.sessions() as s:
        invs = await placement.inventories(s)
        used = await placement.usages(s)
    out = []
    for svc in await _services(d, "ferry-compute"):
        row: dict[str, Any] = {"id": svc.uuid if ctx.version >= (2, 53) else svc.id,
                               "hypervisor_hostname": svc.host, "state": _state(d, svc),
                               "status": "disabled" if svc.disabled else "enabled"}
        if detail:
            inv, u = invs.get(svc.host, {}), used.get(svc.host, {})
            row.update({
                "host_ip": svc.data_address.split(":")[0], "hypervisor_type":
                svc.hypervisor_type, "hypervisor_version": svc.hypervisor_version,
                "service": {"host": svc.host, "id": svc.uuid if ctx.version >= (2, 53)
                            else svc.id, "disabled_reason": svc.disabled_reason}})
            if ctx.version < (2, 88):
                vcpus = inv["VCPU"].total if "VCPU" in inv else 0
                mem = inv["MEMORY_MB"].total if "MEMORY_MB" in inv else 0
                disk = inv["DISK_GB"].total if "DISK_GB" in inv else 0
                row.update({"vcpus": vcpus, "memory_mb": mem, "local_gb": disk,
                            "vcpus_used": u.get("VCPU", 0),
                            "memory_mb_used": u.get("MEMORY_MB", 0),
                            "local_gb_used": u.get("DISK_GB", 0),
                            "free_ram_mb": mem - u.get("MEMORY_MB", 0),
                            "free_disk_gb": disk - u.get("DISK_GB", 0),
                            "current_workload": 0, "running_vms": 0,
                            "disk_available_least": disk - u.get("DISK_GB", 0),
                            "cpu_info": "{}"})
        out.append(row)
    return out


@router.get("/os-hypervisors")
async def list_hypervisors(request: Request, d: ApiDeps = Depends(deps),
                           ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    return {"hypervisors": await _hypervisors(request, d, ctx, detail=False)}


@router.get("/os-hypervisors/detail")
async def list_hypervisors_detail(request: Request, d: ApiDeps = Depends(deps),
                                  ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    return {"hypervisors": await _hypervisors(request, d, ctx, detail=True)}


@router.get("/os-hypervisors/{hyp_id}")
async def show_hypervisor(hyp_id: str, request: Request, d: ApiDeps = Depends(deps),
                          ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    for h in await _hypervisors(request, d, ctx, detail=True):
        if str(h["id"]) == hyp_id or h["hypervisor_hostname"] == hyp_id:
            return {"hypervisor": h}
    raise NotFound(f"Hypervisor with ID {hyp_id} could not be found.")
