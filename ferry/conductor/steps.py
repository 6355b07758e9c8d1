"""One handler per non-final state of the migration state machine.

A handler does the state's work (RPC calls to the hosts) and ends by firing
the event that leaves the state, through `advance`/`advance_in`. It raises on
failure; the runner (`ferry.conductor.runner`) then fires FAIL and the
ROLLING_BACK handler undoes whatever the step log says was done. Handlers are
idempotent because a restarted conductor runs a RESUME state's handler again.

To add a step, see `ferry.conductor.states`; register the handler in `STEPS`.
A step with much of its own (TRANSFERRING) lives in a module of its own;
what all steps share (StepContext, Loaded, fenced RPCs) is in
`ferry.conductor.context`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.conductor import records
from ferry.conductor.context import (
    Loaded,
    StepContext,
    action_name,
    call_host,
    cast_host,
)
from ferry.conductor.states import SOURCE_TOUCHED, Event, State
from ferry.conductor.transferring import step_transferring
from ferry.conductor.transitions import advance, advance_in
from ferry.db.models import Instance, Migration, Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.hoststate import RequestSpec
from ferry.scheduler.scheduler import NoValidHost, select_destinations
from ferry.transfer import new_token

log = logging.getLogger(__name__)

# Nova's instance-action event for each state (several states share one).
EVENT_OF_STATE: dict[State, str] = {
    State.SCHEDULING: "cold_migrate",
    State.CHECKING: "compute_prep_resize",
    State.POWERING_OFF: "compute_resize_instance",
    State.TRANSFERRING: "compute_resize_instance",
    State.PREPARING: "compute_finish_resize",
    State.STARTING: "compute_finish_resize",
    State.CONFIRMING: "compute_confirm_resize",
    State.REVERTING: "compute_revert_resize",
}


# -- SCHEDULING ---------------------------------------------------------------


async def step_scheduling(ctx: StepContext, job: Loaded) -> None:
    mig, inst = job.mig, job.inst
    spec = RequestSpec(
        instance_uuid=inst.uuid, project_id=inst.project_id, user_id=inst.user_id,
        resources=records.flavor_resources(job.flavor),
        ignore_hosts=(mig.source_compute or "",) if mig.source_compute else (),
        requested_host=mig.requested_host,
    )
    try:
        async with ctx.sessions() as s, s.begin():
            await records.event_start(s, inst.uuid, action_name(mig), "cold_migrate", None)
            # Nova's migration-based allocations: the migration holds the source
            # side, the instance will hold the destination's claim.
            if not await placement.allocations_for(s, mig.uuid):
                await placement.move_allocations(s, inst.uuid, mig.uuid)
            if mig.tried_hosts:
                last = mig.steps[-1].get("note", "") if mig.steps else ""
                dest, rest = await _claim_alternate(s, spec, list(mig.alternates), last)
            else:
                sel = await select_destinations(s, spec,
                                                down_after=ctx.settings.service_down_time,
                                                max_attempts=ctx.settings.max_attempts,
                                                cache=ctx.host_cache)
                dest, rest = sel.host, list(sel.alternates)
            await advance_in(s, mig.uuid, Event.SCHEDULED, expect=State.SCHEDULING,
                             note=f"destination {dest}",
                             migration_fields={"dest_compute": dest, "dest_node": dest,
                                               "alternates": rest})
    except NoValidHost as exc:
        # The transaction above rolled back whole: nothing was claimed or moved.
        await _no_valid_host(ctx, job, str(exc))


async def _claim_alternate(s: AsyncSession, spec: RequestSpec, alternates: list[str],
                           last_error: str) -> tuple[str, list[str]]:
    while alternates:
        host = alternates.pop(0)
        try:
            await placement.claim(s, spec.instance_uuid, host, spec.resources,
                                  project_id=spec.project_id, user_id=spec.user_id)
            return host, alternates
        except placement.ClaimFailed:
            continue
    raise NoValidHost(f"Exhausted all hosts available for the migration. Last: {last_error}")


async def _no_valid_host(ctx: StepContext, job: Loaded, reason: str) -> None:
    async with ctx.sessions() as s, s.begin():
        if await placement.allocations_for(s, job.mig.uuid):
            await placement.move_allocations(s, job.mig.uuid, job.inst.uuid)
        await records.event_finish(s, job.inst.uuid, action_name(job.mig), "cold_migrate",
                                   error=reason)
        await records.finish_action(s, job.inst.uuid, action_name(job.mig))
        await records.add_fault(s, job.inst.uuid, reason, None, code=400)
        await advance_in(s, job.mig.uuid, Event.NO_VALID_HOST, note=reason,
                         migration_fields={"error": reason, "dest_compute": None,
                                           "dest_node": None})


# -- CHECKING (pre-flight on the destination, before the guest is touched) -----


async def step_checking(ctx: StepContext, job: Loaded) -> None:
    mig, dest, src = job.mig, job.mig.dest_compute, job.mig.source_compute
    assert dest and src
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, job.inst.uuid, action_name(mig), "cold_migrate")
        await records.event_start(s, job.inst.uuid, action_name(mig), "compute_prep_resize",
                                  dest)
    try:
        disk_bytes = records.flavor_resources(job.flavor)["DISK_GB"] << 30
        info = await call_host(ctx, job, dest, "check_can_migrate_to", instance=job.payload(),
                               image=job.image, disk_bytes=disk_bytes)
        shared = await _shared_storage(ctx, job, src, dest)
        if not shared and not await call_host(ctx, job, src, "check_data_plane",
                                              address=info["data_address"]):
            raise RuntimeError(f"{src} cannot reach the data plane of {dest} at "
                               f"{info['data_address']}")
        if info.get("need_base"):
            await _base_from_peer(ctx, job, src, dest, info["data_address"])
    except Exception as exc:
        await _preflight_failed(ctx, job, f"pre-flight on {dest} failed: {exc}")
        return
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, job.inst.uuid, action_name(mig), "compute_prep_resize")
        await advance_in(s, mig.uuid, Event.PREFLIGHT_OK, expect=State.CHECKING,
                         note="shared storage" if shared else "",
                         migration_fields={"shared_storage": shared,
                                           "dest_host": info["data_address"]})


async def _base_from_peer(ctx: StepContext, job: Loaded, src: str, dest: str,
                          dest_address: str) -> None:
    """The image service cannot serve the base: the source, which runs the server
    on it, pushes its cached copy over the data plane (verified like a disk)."""
    image_id = job.inst.image_ref
    size = await call_host(ctx, job, src, "has_base", image_id=image_id)
    if size is None:
        raise RuntimeError(f"no copy of base image {image_id} was found (not in the image "
                           f"service, not cached on {src})")
    token = new_token()
    await call_host(ctx, job, dest, "expect_base", token=token, migration_uuid=job.mig.uuid,
                    image_id=image_id, size=size, ttl=ctx.settings.transfer_token_ttl)
    await call_host(ctx, job, src, "send_base", migration_uuid=job.mig.uuid, image_id=image_id,
                    address=dest_address, token=token)


async def _shared_storage(ctx: StepContext, job: Loaded, src: str, dest: str) -> bool:
    """Nova's test: a file made on the destination, looked for on the source."""
    name = await call_host(ctx, job, dest, "create_shared_probe")
    try:
        return bool(await call_host(ctx, job, src, "check_shared_probe", name=name))
    finally:
        await call_host(ctx, job, dest, "remove_shared_probe", name=name)


async def _preflight_failed(ctx: StepContext, job: Loaded, reason: str) -> None:
    log.warning("migration %s: %s", job.mig.uuid, reason)
    async with ctx.sessions() as s, s.begin():
        await placement.delete_allocations(s, job.inst.uuid)  # the destination's claim
        await records.event_finish(s, job.inst.uuid, action_name(job.mig),
                                   "compute_prep_resize", error=reason)
        await records.add_fault(s, job.inst.uuid, reason, job.mig.dest_compute)
        await advance_in(s, job.mig.uuid, Event.PREFLIGHT_FAILED, note=reason,
                         migration_fields={"tried_hosts": [*job.mig.tried_hosts,
                                                           job.mig.dest_compute],
                                           "dest_compute": None, "dest_node": None,
                                           "alternates": job.mig.alternates or []})


# -- POWERING_OFF (source); TRANSFERRING is in ferry.conductor.transferring --------


async def step_powering_off(ctx: StepContext, job: Loaded) -> None:
    src = job.mig.source_compute
    assert src
    async with ctx.sessions() as s, s.begin():
        await records.event_start(s, job.inst.uuid, action_name(job.mig),
                                  "compute_resize_instance", src)
    started = utcnow()
    result = await call_host(ctx, job, src, "power_off_for_migration", uuid=job.inst.uuid,
                             timeout=ctx.settings.shutdown_timeout,
                             retry_interval=ctx.settings.shutdown_retry_interval)
    disks = result["disks"]
    await advance(ctx.sessions, job.mig.uuid, Event.POWERED_OFF, expect=State.POWERING_OFF,
                  migration_fields={"disk_info": disks, "powered_off_at": started,
                                    "bytes_total": sum(d["disk_size"] for d in disks),
                                    # Made with the transition, so a resumed transfer
                                    # step always presents the same grant.
                                    "transfer_token": new_token()},
                  instance_fields={"power_state": 4})


# -- PREPARING, STARTING (destination) -------------------------------------------


async def step_preparing(ctx: StepContext, job: Loaded) -> None:
    dest = job.mig.dest_compute
    assert dest
    async with ctx.sessions() as s, s.begin():
        await records.event_start(s, job.inst.uuid, action_name(job.mig),
                                  "compute_finish_resize", dest)
    await call_host(ctx, job, dest, "prepare_migrated_instance", instance=job.payload(),
                    image=job.image)
    await advance(ctx.sessions, job.mig.uuid, Event.PREPARED, expect=State.PREPARING)


async def step_starting(ctx: StepContext, job: Loaded) -> None:
    mig = job.mig
    dest = mig.dest_compute
    assert dest
    power_on = mig.old_vm_state != "stopped"
    power_state = await call_host(ctx, job, dest, "finish_migration", instance=job.payload(),
                                  image=job.image, power_on=power_on)
    now = utcnow()
    downtime = (now - mig.powered_off_at).total_seconds() if (
        power_on and mig.powered_off_at) else None
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, job.inst.uuid, action_name(mig), "compute_finish_resize")
        await records.finish_action(s, job.inst.uuid, action_name(mig))
        await advance_in(s, mig.uuid, Event.STARTED, expect=State.STARTING,
                         migration_fields={"downtime_s": downtime},
                         instance_fields={"power_state": power_state, "launched_at": now,
                                          "flavor_id": job.flavor.id,
                                          "old_flavor_id": job.old_flavor.id,
                                          "new_flavor_id": job.flavor.id, "progress": 100})


# -- CONFIRMING, REVERTING (user decisions) -----------------------------------------


async def step_confirming(ctx: StepContext, job: Loaded) -> None:
    src = job.mig.source_compute
    assert src
    async with ctx.sessions() as s, s.begin():
        await records.event_start(s, job.inst.uuid, "confirmResize", "compute_confirm_resize", src)
    await call_host(ctx, job, src, "confirm_migration", uuid=job.inst.uuid)
    async with ctx.sessions() as s, s.begin():
        await placement.delete_allocations(s, job.mig.uuid)
        await records.event_finish(s, job.inst.uuid, "confirmResize", "compute_confirm_resize")
        await records.finish_action(s, job.inst.uuid, "confirmResize")
        await advance_in(s, job.mig.uuid, Event.CONFIRMED, expect=State.CONFIRMING,
                         instance_fields={"old_flavor_id": None, "new_flavor_id": None,
                                          "progress": 0})


async def step_reverting(ctx: StepContext, job: Loaded) -> None:
    mig = job.mig
    src, dest = mig.source_compute, mig.dest_compute
    assert src and dest
    async with ctx.sessions() as s, s.begin():
        await records.event_start(s, job.inst.uuid, "revertResize", "compute_revert_resize", dest)
    await call_host(ctx, job, dest, "revert_migration", uuid=job.inst.uuid, migration_uuid=mig.uuid,
                    shared=bool(mig.shared_storage))
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, job.inst.uuid, "revertResize", "compute_revert_resize")
        await records.event_start(s, job.inst.uuid, "revertResize",
                                  "compute_finish_revert_resize", src)
    power_state = await call_host(ctx, job, src, "finish_revert_migration",
                                  instance=job.payload(old=True), image=job.image,
                                  power_on=mig.old_vm_state != "stopped")
    async with ctx.sessions() as s, s.begin():
        await placement.move_allocations(s, mig.uuid, job.inst.uuid)
        await records.event_finish(s, job.inst.uuid, "revertResize",
                                   "compute_finish_revert_resize")
        await records.finish_action(s, job.inst.uuid, "revertResize")
        await advance_in(s, mig.uuid, Event.REVERTED, expect=State.REVERTING,
                         instance_fields={"host": src, "node": src, "power_state": power_state,
                                          "flavor_id": job.old_flavor.id, "old_flavor_id": None,
                                          "new_flavor_id": None, "progress": 0})


# -- ROLLING_BACK ----------------------------------------------------------------------


def source_touched(mig: Migration) -> bool:
    return any(State(e["state"]) in SOURCE_TOUCHED for e in mig.steps)


async def step_rolling_back(ctx: StepContext, job: Loaded) -> None:
    """Put the server back on its source, whole, and give back every claim."""
    mig = job.mig
    src, dest = mig.source_compute, mig.dest_compute
    assert src
    notes = []
    if dest:
        args = {"uuid": job.inst.uuid, "migration_uuid": mig.uuid,
                "shared": bool(mig.shared_storage)}
        try:
            # Bounded: a destination that is down (its agent died mid-transfer)
            # must not keep the server off on its source.
            await call_host(ctx, job, dest, "revert_migration",
                            rpc_timeout=ctx.settings.rollback_dest_timeout, **args)
        except Exception as exc:
            # Queued for the host: it drops the grant and the partial files
            # when it serves its queue again.
            await cast_host(ctx, job, dest, "revert_migration", **args)
            notes.append(f"cleanup on {dest} failed ({exc}); queued for when it is back")
    power_state = None
    if source_touched(mig):
        power_state = await call_host(ctx, job, src, "finish_revert_migration",
                                      instance=job.payload(old=True), image=job.image,
                                      power_on=mig.old_vm_state != "stopped")
    async with ctx.sessions() as s, s.begin():
        if await placement.allocations_for(s, mig.uuid):
            await placement.move_allocations(s, mig.uuid, job.inst.uuid)
        await records.finish_action(s, job.inst.uuid, action_name(mig))
        inst_fields: dict[str, Any] = {"host": src, "node": src, "flavor_id": job.old_flavor.id,
                                       "old_flavor_id": None, "new_flavor_id": None,
                                       "progress": 0}
        if power_state is not None:
            inst_fields["power_state"] = power_state
        await advance_in(s, mig.uuid, Event.ROLLED_BACK, expect=State.ROLLING_BACK,
                         note="; ".join(notes), instance_fields=inst_fields,
                         migration_fields={"transfer_token": None, "transfer_eta": None,
                                           "transfer_rate": None})


async def record_failure(ctx: StepContext, job: Loaded, error: str) -> None:
    """A step raised: note it on the action, as a fault, and start the rollback."""
    state = State(job.mig.state)
    host = {State.POWERING_OFF: job.mig.source_compute, State.TRANSFERRING: job.mig.source_compute
            }.get(state, job.mig.dest_compute)
    async with ctx.sessions() as s, s.begin():
        event = EVENT_OF_STATE.get(state)
        if event:
            await records.event_finish(s, job.inst.uuid, action_name(job.mig) if state not in (
                State.CONFIRMING, State.REVERTING) else (
                "confirmResize" if state == State.CONFIRMING else "revertResize"),
                event, error=error, host=host)
        await records.add_fault(s, job.inst.uuid, error, host)
        await advance_in(s, job.mig.uuid, Event.FAIL, expect=state, note=error,
                         migration_fields={"error": error})


async def mark_unrecoverable(ctx: StepContext, job: Loaded, error: str) -> None:
    """A cleanup step keeps failing: the server goes ERROR with a fault that says
    where every copy is. Nothing is deleted; a restarted conductor resumes."""
    state = State(job.mig.state)
    src, dest, uuid = job.mig.source_compute, job.mig.dest_compute, job.inst.uuid
    where = {
        State.CONFIRMING: f"the server runs on {dest}; the source copy {uuid}_resize "
                          f"is still on {src}",
        State.REVERTING: f"the source copy {uuid}_resize is intact on {src}",
        State.ROLLING_BACK: f"the source copy is kept on {src} ({uuid} or {uuid}_resize)",
    }.get(state, "")
    async with ctx.sessions() as s, s.begin():
        inst = (await s.execute(select(Instance).where(Instance.uuid == uuid))).scalar_one()
        inst.vm_state = "error"
        await records.add_fault(s, uuid, f"{state.value} failed: {error}", src,
                                details=f"{error}. {where}.")


async def progress(ctx: StepContext, migration_uuid: str, done: int, total: int,
                   rate: float | None = None, eta: float | None = None,
                   files: dict[str, Any] | None = None) -> None:
    """A transfer progress report from the source (about twice a second)."""
    async with ctx.sessions() as s, s.begin():
        mig = (await s.execute(select(Migration).where(Migration.uuid == migration_uuid))
               ).scalar_one_or_none()
        if mig is None or mig.state != State.TRANSFERRING:
            return  # late: the step already ended
        mig.bytes_done, mig.bytes_total = done, total
        mig.transfer_rate, mig.transfer_eta = rate, eta
        if files is not None:
            mig.transfer_files = files
        mig.progress_at = utcnow()
        inst = (await s.execute(select(Instance).where(Instance.uuid == mig.instance_uuid))
                ).scalar_one()
        inst.progress = int(100 * done / total) if total else 0


async def host_is_up(ctx: StepContext, host: str) -> bool:
    async with ctx.sessions() as s:
        svc = (await s.execute(select(Service).where(Service.host == host,
                                                     Service.binary == "ferry-compute"))
               ).scalar_one_or_none()
    if svc is None or svc.forced_down or svc.last_seen_up is None:
        return False
    age = utcnow() - svc.last_seen_up
    return age <= dt.timedelta(seconds=ctx.settings.service_down_time)


Step = Callable[[StepContext, Loaded], Awaitable[None]]

STEPS: dict[State, Step] = {
    State.SCHEDULING: step_scheduling,
    State.CHECKING: step_checking,
    State.POWERING_OFF: step_powering_off,
    State.TRANSFERRING: step_transferring,
    State.PREPARING: step_preparing,
    State.STARTING: step_starting,
    State.CONFIRMING: step_confirming,
    State.REVERTING: step_reverting,
    State.ROLLING_BACK: step_rolling_back,
}
