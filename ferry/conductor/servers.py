"""Server lifecycle outside migrations: build, stop, start, delete.

The API has already validated the request and set the task_state; these
coroutines do the host work over RPC and record the outcome.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from ferry.conductor import records
from ferry.conductor.context import StepContext
from ferry.conductor.runner import patiently
from ferry.conductor.states import FINAL, State
from ferry.db.models import Flavor, Image, Instance, Migration, utcnow
from ferry.scheduler import placement
from ferry.scheduler.hoststate import RequestSpec
from ferry.scheduler.scheduler import NoValidHost, Selection, select_destinations

log = logging.getLogger(__name__)


async def _instance(ctx: StepContext, uuid: str) -> Instance:
    async with ctx.sessions() as s:
        return (await s.execute(select(Instance).where(Instance.uuid == uuid))).scalar_one()


async def _finish(ctx: StepContext, uuid: str, action: str, error: str | None = None,
                  **fields: object) -> None:
    async with ctx.sessions() as s, s.begin():
        inst = (await s.execute(select(Instance).where(Instance.uuid == uuid))).scalar_one()
        for k, v in fields.items():
            setattr(inst, k, v)
        if error:
            await records.add_fault(s, uuid, error, inst.host)
        await records.finish_action(s, uuid, action)


async def _schedule(ctx: StepContext, uuid: str, spec: RequestSpec) -> Selection:
    async with ctx.sessions() as s, s.begin():
        sel = await select_destinations(s, spec, down_after=ctx.settings.service_down_time,
                                        max_attempts=1, cache=ctx.host_cache)
        await records.event_start(s, uuid, "create", "compute__do_build_and_run_instance",
                                  sel.host)
        row = (await s.execute(select(Instance).where(Instance.uuid == uuid))).scalar_one()
        row.host, row.node, row.task_state = sel.host, sel.host, "spawning"
    return sel


async def build(ctx: StepContext, uuid: str) -> None:
    inst = await _instance(ctx, uuid)
    async with ctx.sessions() as s:
        flavor = await s.get(Flavor, inst.flavor_id)
        image = await s.get(Image, inst.image_ref)
    assert flavor is not None
    spec = RequestSpec(uuid, inst.project_id, inst.user_id, records.flavor_resources(flavor),
                       availability_zone=inst.availability_zone)
    try:
        # A deadlock or a pool timeout rolled the transaction back whole: try again.
        sel = await patiently(_schedule, ctx, uuid, spec)
    except NoValidHost as exc:
        await _finish(ctx, uuid, "create", str(exc), vm_state="error", task_state=None)
        return
    try:
        power = await ctx.bus.call(f"compute.{sel.host}", "spawn",
                                   {"instance": records.instance_payload(inst, flavor),
                                    "image": records.image_payload(image, inst.image_ref)})
    except Exception as exc:
        async with ctx.sessions() as s, s.begin():
            await placement.delete_allocations(s, uuid)
            await records.event_finish(s, uuid, "create", "compute__do_build_and_run_instance",
                                       error=str(exc))
        await _finish(ctx, uuid, "create", str(exc), vm_state="error", task_state=None)
        return
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, uuid, "create", "compute__do_build_and_run_instance")
    await _finish(ctx, uuid, "create", vm_state="active", task_state=None, power_state=power,
                  launched_at=utcnow())


async def stop(ctx: StepContext, uuid: str) -> None:
    inst = await _instance(ctx, uuid)
    try:
        power = await ctx.bus.call(f"compute.{inst.host}", "stop_instance",
                                   {"uuid": uuid, "timeout": ctx.settings.shutdown_timeout,
                                    "retry_interval": ctx.settings.shutdown_retry_interval})
    except Exception as exc:
        await _finish(ctx, uuid, "stop", str(exc), task_state=None)
        return
    await _finish(ctx, uuid, "stop", vm_state="stopped", task_state=None, power_state=power)


async def start(ctx: StepContext, uuid: str) -> None:
    inst = await _instance(ctx, uuid)
    try:
        power = await ctx.bus.call(f"compute.{inst.host}", "start_instance", {"uuid": uuid})
    except Exception as exc:
        await _finish(ctx, uuid, "start", str(exc), task_state=None)
        return
    await _finish(ctx, uuid, "start", vm_state="active", task_state=None, power_state=power)


async def delete(ctx: StepContext, uuid: str) -> None:
    inst = await _instance(ctx, uuid)
    async with ctx.sessions() as s:
        migs = list((await s.execute(select(Migration).where(
            Migration.instance_uuid == uuid))).scalars())
    hosts = {inst.host} | {h for m in migs if m.state not in FINAL
                           for h in (m.source_compute, m.dest_compute)}
    for host in sorted(h for h in hosts if h):
        try:
            await ctx.bus.call(f"compute.{host}", "delete_instance", {"uuid": uuid})
        except Exception as exc:
            log.warning("delete of %s on %s failed: %s", uuid, host, exc)
    async with ctx.sessions() as s, s.begin():
        await placement.delete_allocations(s, uuid)
        for m in migs:
            await placement.delete_allocations(s, m.uuid)
            if m.state not in FINAL:
                row = await s.get(Migration, m.id)
                assert row is not None
                # Deleting a server in VERIFY_RESIZE confirms it (Nova does the same).
                row.state = State.CONFIRMED if m.state == State.VERIFY else State.ERROR
                row.status = "confirmed" if m.state == State.VERIFY else "error"
        row_i = (await s.execute(select(Instance).where(Instance.uuid == uuid))).scalar_one()
        row_i.vm_state, row_i.task_state, row_i.deleted = "deleted", None, True
        row_i.terminated_at = utcnow()
        row_i.power_state = 0
        await records.finish_action(s, uuid, "delete")
