"""POST /servers/{id}/action: migrate, resize, confirm, revert, stop, start, console.

Every action checks first and changes nothing when it refuses. State changes
that race (two migrate requests at once) are compare-and-swap updates, so
exactly one wins and the other gets 409.

Ferry extensions ride in the action's body under namespaced keys that Nova
clients never send (``"ferry:max_bandwidth"``: the migration's transfer cap in
bytes/s, on migrate and resize). Nova's own schemas stay as strict as Nova's
for every other key. To add one: a name in ``FERRY_KEYS``, a parser, and
where it is stored in ``_start_move``.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.api import lookups
from ferry.api.body import json_body
from ferry.api.context import ApiDeps, RequestContext, context, deps
from ferry.api.dispatch import cast_to_conductor as _cast
from ferry.api.errors import BadRequest, Conflict
from ferry.api.servers import target
from ferry.bus.base import BusError
from ferry.bus.catalogue import compute_topic
from ferry.conductor.states import INITIAL, STATES, Event, State
from ferry.conductor.transitions import ConcurrentUpdate, advance_in
from ferry.db.models import Instance, InstanceAction, Migration, utcnow
from ferry.scheduler.hoststate import is_up

router = APIRouter()

Action = Callable[[Request, ApiDeps, RequestContext, Instance, Any], Awaitable[Response]]


def _record_action(s: AsyncSession, ctx: RequestContext, inst: Instance, name: str) -> None:
    s.add(InstanceAction(action=name, instance_uuid=inst.uuid, request_id=ctx.request_id,
                         user_id=ctx.user_id, project_id=ctx.project_id))


def _state_conflict(inst: Instance, action: str) -> Conflict:
    if inst.task_state is not None:
        return Conflict(f"Cannot '{action}' instance {inst.uuid} while it is in task_state "
                        f"{inst.task_state}")
    return Conflict(f"Cannot '{action}' instance {inst.uuid} while it is in vm_state "
                    f"{inst.vm_state}")


async def _check_host_up(d: ApiDeps, s: AsyncSession, host: str | None) -> None:
    svc = await lookups.compute_service(s, host or "")
    if svc is None or not is_up(svc.last_seen_up, svc.forced_down, utcnow(),
                                d.settings.service_down_time):
        raise Conflict(f"Compute service of {host} is unavailable at this time.")


MAX_BANDWIDTH = "ferry:max_bandwidth"
FERRY_KEYS = frozenset({MAX_BANDWIDTH})
_MAX_RATE = 2**53  # bytes/s; JSON numbers stay exact below it


def _max_bandwidth(arg: Any) -> int | None:
    """The request's transfer cap (a positive integer, bytes/s), or None."""
    if not isinstance(arg, dict) or MAX_BANDWIDTH not in arg:
        return None
    value = arg[MAX_BANDWIDTH]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_RATE:
        raise BadRequest(f"Invalid input for field/attribute {MAX_BANDWIDTH}. Value: "
                         f"{value!r}. It must be a positive integer (bytes per second).")
    return value


async def _start_move(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                      *, action: str, new_flavor_id: int | None, host: str | None,
                      max_bandwidth: int | None = None) -> Response:
    mig_uuid = str(uuidlib.uuid4())
    async with d.sessions() as s, s.begin():
        fresh = await lookups.server(s, ctx, inst.uuid)
        if fresh.vm_state not in ("active", "stopped") or fresh.task_state is not None:
            raise _state_conflict(fresh, action)
        await _check_host_up(d, s, fresh.host)
        if host is not None:
            if host == fresh.host:
                raise BadRequest(f"The source and destination compute hosts are the same "
                                 f"({host}): cannot migrate to the same host.")
            if await lookups.compute_service(s, host) is None:
                raise BadRequest(f"Compute host {host} could not be found.")
        # Compare-and-swap: only a server with no task may start one.
        won = await s.execute(
            update(Instance)
            .where(Instance.id == fresh.id, Instance.task_state.is_(None),
                   Instance.vm_state.in_(("active", "stopped")))
            .values(task_state=STATES[INITIAL].task_state, progress=0)
            .execution_options(synchronize_session=False))
        if won.rowcount != 1:  # type: ignore[attr-defined]
            raise _state_conflict(fresh, action)
        info = STATES[INITIAL]
        s.add(Migration(
            uuid=mig_uuid, instance_uuid=fresh.uuid,
            migration_type="migration" if new_flavor_id is None else "resize",
            state=INITIAL.value, status=info.status, phase=info.phase,
            source_compute=fresh.host, source_node=fresh.node, requested_host=host,
            old_instance_type_id=fresh.flavor_id,
            new_instance_type_id=new_flavor_id or fresh.flavor_id,
            old_vm_state=fresh.vm_state, user_id=ctx.user_id, project_id=ctx.project_id,
            request_id=ctx.request_id, max_bandwidth=max_bandwidth,
            steps=[{"state": INITIAL.value, "phase": "requested", "event": "requested",
                    "at": _now()}]))
        _record_action(s, ctx, fresh, action)
    await _cast(d, "migrate_server", {"migration_uuid": mig_uuid})
    return Response(status_code=202)


def _now() -> str:
    return utcnow().isoformat() + "Z"


async def migrate(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                  arg: Any) -> Response:
    host = None
    if ctx.version >= (2, 56):
        if arg is not None and not isinstance(arg, dict):
            raise BadRequest("Invalid input for field/attribute migrate.")
        arg = arg or {}
        extra = set(arg) - {"host"} - FERRY_KEYS
        if extra:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(extra)} "
                             f"were unexpected)")
        host = arg.get("host")
        if host is not None and (not isinstance(host, str) or not host.strip()):
            raise BadRequest("Invalid input for field/attribute host.")
    limit = _max_bandwidth(arg)
    # As Nova: naming a host is a separate (admin-only by default) rule.
    ctx.authorize("os_compute_api:os-migrate-server:migrate:host" if host
                  else "os_compute_api:os-migrate-server:migrate", target(inst))
    return await _start_move(request, d, ctx, inst, action="migrate", new_flavor_id=None,
                             host=host, max_bandwidth=limit)


async def resize(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                 arg: Any) -> Response:
    if not isinstance(arg, dict) or "flavorRef" not in arg:
        raise BadRequest("Invalid input for field/attribute resize. 'flavorRef' is required")
    limit = _max_bandwidth(arg)
    async with d.sessions() as s:
        flavor = await lookups.flavor_ref(s, arg["flavorRef"])
    if flavor.id == inst.flavor_id:
        raise BadRequest("When resizing, instances must change flavor!")
    return await _start_move(request, d, ctx, inst, action="resize", new_flavor_id=flavor.id,
                             host=None, max_bandwidth=limit)


async def _decide(d: ApiDeps, ctx: RequestContext, inst: Instance, event: Event,
                  action: str, method: str) -> None:
    async with d.sessions() as s, s.begin():
        fresh = await lookups.server(s, ctx, inst.uuid)
        mig = (await s.execute(select(Migration).where(
            Migration.instance_uuid == fresh.uuid, Migration.state == State.VERIFY.value)
        )).scalar_one_or_none()
        if fresh.vm_state != "resized" or mig is None:
            raise BadRequest("Instance has not been resized.")
        if fresh.task_state is not None:
            raise _state_conflict(fresh, action)
        await _check_host_up(d, s, mig.source_compute if event == Event.CONFIRM
                             else mig.dest_compute)
        try:
            await advance_in(s, mig.uuid, event, expect=State.VERIFY)
        except ConcurrentUpdate:
            raise _state_conflict(fresh, action) from None
        _record_action(s, ctx, fresh, action)
    await _cast(d, method, {"migration_uuid": mig.uuid})


async def confirm(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                  arg: Any) -> Response:
    await _decide(d, ctx, inst, Event.CONFIRM, "confirmResize", "confirm_migration_request")
    return Response(status_code=204)


async def revert(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                 arg: Any) -> Response:
    await _decide(d, ctx, inst, Event.REVERT, "revertResize", "revert_migration_request")
    return Response(status_code=202)


async def _power(d: ApiDeps, ctx: RequestContext, inst: Instance, action: str,
                 allowed: tuple[str, ...], task: str, method: str) -> Response:
    async with d.sessions() as s, s.begin():
        won = await s.execute(
            update(Instance)
            .where(Instance.id == inst.id, Instance.task_state.is_(None),
                   Instance.vm_state.in_(allowed))
            .values(task_state=task)
            .execution_options(synchronize_session=False))
        if won.rowcount != 1:  # type: ignore[attr-defined]
            raise _state_conflict(await lookups.server(s, ctx, inst.uuid), action)
        _record_action(s, ctx, inst, action)
    await _cast(d, method, {"instance_uuid": inst.uuid}, undo={"task_state": None})
    return Response(status_code=202)


async def stop(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
               arg: Any) -> Response:
    return await _power(d, ctx, inst, "stop", ("active", "error"), "powering-off",
                        "stop_server")


async def start(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                arg: Any) -> Response:
    return await _power(d, ctx, inst, "start", ("stopped",), "powering-on", "start_server")


async def console(request: Request, d: ApiDeps, ctx: RequestContext, inst: Instance,
                  arg: Any) -> Response:
    length: int | None = None
    if isinstance(arg, dict) and arg.get("length") is not None:
        raw = arg["length"]
        try:
            length = int(raw)
        except (TypeError, ValueError):
            raise BadRequest("Invalid input for field/attribute length.") from None
        if length < -1:
            raise BadRequest("Invalid input for field/attribute length.")
        if length == -1:
            length = None
    if inst.vm_state not in ("active", "stopped", "resized", "error") or not inst.host:
        raise Conflict(f"Instance {inst.uuid} is not ready")
    try:
        text = await d.bus.call(compute_topic(inst.host), "console_output",
                                {"uuid": inst.uuid, "length": length})
    except BusError as exc:
        raise Conflict(f"Console output is not available: {exc}") from exc
    return JSONResponse({"output": text})


# The rule each action needs (migrate picks its own: with or without a host).
RULES: dict[str, str | None] = {
    "migrate": None, "resize": "os_compute_api:servers:resize",
    "confirmResize": "os_compute_api:servers:confirm_resize",
    "revertResize": "os_compute_api:servers:revert_resize",
    "os-stop": "os_compute_api:servers:stop", "os-start": "os_compute_api:servers:start",
    "os-getConsoleOutput": "os_compute_api:os-console-output",
}

ACTIONS: dict[str, Action] = {
    "migrate": migrate, "resize": resize, "confirmResize": confirm, "revertResize": revert,
    "os-stop": stop, "os-start": start, "os-getConsoleOutput": console,
}


@router.post("/servers/{server_id}/action")
async def server_action(server_id: str, request: Request, d: ApiDeps = Depends(deps),
                        ctx: RequestContext = Depends(context)) -> Response:
    body = await json_body(request)
    async with d.sessions() as s:
        inst = await lookups.server(s, ctx, server_id)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Malformed request body: exactly one action is expected")
    name, arg = next(iter(body.items()))
    handler = ACTIONS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    if rule := RULES.get(name):
        ctx.authorize(rule, target(inst))
    return await handler(request, d, ctx, inst, arg)
