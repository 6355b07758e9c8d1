"""/os-hypervisors and /os-services: the compute hosts as Nova shows them, and
Nova's PUT /os-services to disable, enable or force down a compute host.

The update follows Nova's `ServiceController.update` (2025.2): from 2.53 the
service's uuid is in the path and the body says what to change
(`status`, `disabled_reason`, `forced_down`); before 2.53 the path names an
action (`enable`, `disable`, `disable-log-reason`, from 2.11 `force-down`)
and the body names `host` and `binary`. Bodies are checked before the policy
(Nova validates its JSON schema first), and nothing is written unless the
whole request is valid. Only compute services can be updated; clients may
call the binary `nova-compute` or `ferry-compute`. The scheduler reads
`disabled` and `forced_down` on every decision (`ferry.scheduler.filters`).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.api.body import json_body
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.errors import BadRequest, NotFound
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


def _service_view(d: ApiDeps, ctx: RequestContext, svc: Service,
                  forced_down: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": svc.uuid if ctx.version >= (2, 53) else svc.id, "binary": svc.binary,
        "host": svc.host, "zone": svc.zone,
        "status": "disabled" if svc.disabled else "enabled", "state": _state(d, svc),
        "updated_at": iso_us(svc.updated_at or svc.last_seen_up),
        "disabled_reason": svc.disabled_reason}
    if forced_down:
        row["forced_down"] = svc.forced_down
    return row


@router.get("/os-services")
async def list_services(request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    ctx.authorize("os_compute_api:os-services:list")
    binary = request.query_params.get("binary")
    if binary == "nova-compute":
        binary = "ferry-compute"
    host = request.query_params.get("host")
    return {"services": [_service_view(d, ctx, svc, ctx.version >= (2, 11))
                         for svc in await _services(d, binary)
                         if not host or svc.host == host]}


# -- PUT /os-services/{id | action} ---------------------------------------------------

COMPUTE_BINARIES = ("ferry-compute", "nova-compute")
# Nova's parameter_types.boolean: the JSON booleans and these strings.
_TRUE = {"True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes"}
_FALSE = {"False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"}


def _invalid(name: str, value: Any, why: str) -> BadRequest:
    return BadRequest(f"Invalid input for field/attribute {name}. Value: {value}. {why}")


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise _invalid(name, value, "Expected a string of 1 to 255 characters.")


def _status(name: str, value: Any) -> None:
    if value not in ("enabled", "disabled"):
        raise _invalid(name, value, f"{value!r} is not one of ['enabled', 'disabled']")


def _boolean(name: str, value: Any) -> None:
    if not (isinstance(value, bool) or value in _TRUE or value in _FALSE):
        raise _invalid(name, value, f"{value!r} is not a boolean")


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else value in _TRUE


def _check(body: Any, fields: dict[str, Callable[[str, Any], None]],
           required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Nova's JSON-schema check of an update body (additionalProperties: false)."""
    if not isinstance(body, dict):
        raise BadRequest(f"Invalid input for field/attribute body. Value: {body}. "
                         f"{body!r} is not of type 'object'")
    extra = sorted(set(body) - set(fields))
    if extra:
        raise BadRequest("Additional properties are not allowed "
                         f"({', '.join(repr(k) for k in extra)} "
                         f"{'was' if len(extra) == 1 else 'were'} unexpected)")
    for name in required:
        if name not in body:
            raise BadRequest(f"Invalid input: '{name}' is a required property")
    for name, value in body.items():
        fields[name](name, value)
    return body


@router.put("/os-services/{service_id}")
async def update_service(service_id: str, request: Request, d: ApiDeps = Depends(deps),
                         ctx: RequestContext = Depends(context)) -> dict[str, Any]:
    body = await json_body(request)
    if ctx.version >= (2, 53):
        return await _update_v253(service_id, body, d, ctx)
    return await _update_v21(service_id, body, d, ctx)


async def _update_v253(service_id: str, body: Any, d: ApiDeps,
                       ctx: RequestContext) -> dict[str, Any]:
    body = _check(body, {"status": _status, "disabled_reason": _text,
                         "forced_down": _boolean})
    try:
        uuidlib.UUID(service_id)
    except ValueError:
        raise BadRequest(f"Invalid uuid {service_id}") from None
    ctx.authorize("os_compute_api:os-services:update")
    async with d.sessions() as s, s.begin():
        svc = (await s.execute(select(Service).where(Service.uuid == service_id))
               ).scalar_one_or_none()
        if svc is None:
            raise NotFound(f"Service {service_id} could not be found.")
        _only_compute(svc.binary)
        changed = False
        if body.get("status") == "enabled":
            # Nova: a reason makes no sense when enabling.
            if body.get("disabled_reason"):
                raise BadRequest("Specifying 'disabled_reason' with status 'enabled' "
                                 "is invalid.")
            svc.disabled, svc.disabled_reason, changed = False, None, True
        elif body.get("status") == "disabled":
            svc.disabled, svc.disabled_reason = True, body.get("disabled_reason")
            changed = True
        # Not an elif: a request may change both (as Nova allows).
        if "forced_down" in body:
            svc.forced_down, changed = _as_bool(body["forced_down"]), True
        if not changed:
            # Nova ignores a disabled_reason without a status: nothing to do.
            raise BadRequest("No updates were requested. Fields 'status' or "
                             "'forced_down' should be specified.")
        await s.flush()
        await s.refresh(svc)
        return {"service": _service_view(d, ctx, svc, forced_down=True)}


def _only_compute(binary: str) -> None:
    if binary not in COMPUTE_BINARIES:
        raise BadRequest(f"Updating a {binary} service is not supported. Only "
                         "nova-compute services can be updated.")


async def _by_host(s: AsyncSession, host: str, binary: str) -> Service:
    _only_compute(binary)
    svc = (await s.execute(select(Service).where(
        Service.host == host, Service.binary == "ferry-compute"))).scalar_one_or_none()
    if svc is None:
        raise NotFound(f"Could not find binary {binary} on host {host}.")
    return svc


async def _update_v21(action: str, body: Any, d: ApiDeps,
                      ctx: RequestContext) -> dict[str, Any]:
    fields: dict[str, Callable[[str, Any], None]] = {
        "host": _text, "binary": _text, "disabled_reason": _text}
    if ctx.version >= (2, 11):
        fields["forced_down"] = _boolean
    body = _check(body, fields, required=("host", "binary"))
    ctx.authorize("os_compute_api:os-services:update")
    actions = ["enable", "disable", "disable-log-reason"]
    if ctx.version >= (2, 11):
        actions.append("force-down")
    if action not in actions:
        raise NotFound("Unknown action")
    host, binary = body["host"], body["binary"]
    if action == "disable-log-reason" and "disabled_reason" not in body:
        raise BadRequest("Missing disabled reason field")
    if action == "force-down" and "forced_down" not in body:
        raise BadRequest("Missing forced_down field")
    async with d.sessions() as s, s.begin():
        svc = await _by_host(s, host, binary)
        out: dict[str, Any] = {"host": host, "binary": binary}
        if action == "force-down":
            svc.forced_down = out["forced_down"] = _as_bool(body["forced_down"])
        elif action == "enable":
            svc.disabled, svc.disabled_reason = False, None
            out["status"] = "enabled"
        else:
            # Nova's plain "disable" ignores a disabled_reason in the body.
            reason = body["disabled_reason"] if action == "disable-log-reason" else None
            svc.disabled, svc.disabled_reason = True, reason
            out["status"] = "disabled"
            if reason:
                out["disabled_reason"] = reason
    return {"service": out}


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
