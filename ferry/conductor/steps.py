"""One handler per non-final state of the migration state machine.

A handler does the state's work (RPC calls to the hosts) and ends by firing
the event that leaves the state, through `advance`/`advance_in`. It raises on
failure; the runner (`ferry.conductor.runner`) then fires FAIL and the
ROLLING_BACK handler undoes whatever the step log says was done. Handlers are
idempotent because a restarted conductor runs a RESUME state's handler again.

To add a step, see `ferry.conductor.states`; register the handler in `STEPS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.bus.base import BadMessage, Bus, BusError, RemoteError
from ferry.bus.catalogue import compute_topic
from ferry.conductor import records
from ferry.conductor.states import SOURCE_TOUCHED, Event, State
from ferry.conductor.transitions import advance, advance_in
from ferry.conf import Settings
from ferry.db.models import Flavor, Image, Instance, Migration, Service, utcnow
from ferry.scheduler import placement
from ferry.scheduler.hostcache import HostStateCache
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


@dataclass
class StepContext:
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    settings: Settings
    # What the scheduler knows of every host between decisions (one per database).
    host_cache: HostStateCache = field(default_factory=HostStateCache)


@dataclass
class Loaded:
    mig: Migration
    inst: Instance
    flavor: Flavor  # the flavor the server runs with at the destination
    old_flavor: Flavor
    image: dict[str, Any]

    def payload(self, old: bool = False) -> dict[str, Any]:
        return records.instance_payload(self.inst, self.old_flavor if old else self.flavor)


def action_name(mig: Migration) -> str:
    return "migrate" if mig.migration_type == "migration" else "resize"


async def load(ctx: StepContext, migration_uuid: str) -> Loaded:
    async with ctx.sessions() as s:
        mig = (await s.execute(select(Migration).where(Migration.uuid == migration_uuid))
               ).scalar_one()
        inst = (await s.execute(select(Instance).where(Instance.uuid == mig.instance_uuid))
                ).scalar_one()
        new = await s.get(Flavor, mig.new_instance_type_id or inst.flavor_id)
        old = await s.get(Flavor, mig.old_instance_type_id or inst.flavor_id)
        image = await s.get(Image, inst.image_ref)
        assert new is not None and old is not None
        return Loaded(mig, inst, new, old, records.image_payload(image, inst.image_ref))


async def _call(ctx: StepContext, job: Loaded, host: str, method: str,
                rpc_timeout: float | None = None, **args: Any) -> Any:
    """RPC to a host, fenced with (migration id, generation) so that the host
    refuses a step that arrives after a later one (see ComputeManager)."""
    fence = [job.mig.id, job.mig.generation]
    return await ctx.bus.call(compute_topic(host), method, {**args, "fence": fence},
                              timeout=rpc_timeout)


async def _cast(ctx: StepContext, job: Loaded, host: str, method: str, **args: Any) -> None:
    """Like `_call`, without waiting: the message waits in the host's queue until
    the host serves it again (the fence still refuses it if a later step ran)."""
    fence = [job.mig.id, job.mig.generation]
    await ctx.bus.cast(compute_topic(host), method, {**args, "fence": fence})


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
        info = await _call(ctx, job, dest, "check_can_migrate_to", instance=job.payload(),
                           image=job.image, disk_bytes=disk_bytes)
        shared = await _shared_storage(ctx, job, src, dest)
        if not shared and not await _call(ctx, job, src, "check_data_plane",
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
    size = await _call(ctx, job, src, "has_base", image_id=image_id)
    if size is None:
        raise RuntimeError(f"no copy of base image {image_id} was found (not in the image "
                           f"service, not cached on {src})")
    token = new_token()
    await _call(ctx, job, dest, "expect_base", token=token, migration_uuid=job.mig.uuid,
                image_id=image_id, size=size, ttl=ctx.settings.transfer_token_ttl)
    await _call(ctx, job, src, "send_base", migration_uuid=job.mig.uuid, image_id=image_id,
                address=dest_address, token=token)


async def _shared_storage(ctx: StepContext, job: Loaded, src: str, dest: str) -> bool:
    """Nova's test: a file made on the destination, looked for on the source."""
    name = await _call(ctx, job, dest, "create_shared_probe")
    try:
        return bool(await _call(ctx, job, src, "check_shared_probe", name=name))
    finally:
        await _call(ctx, job, dest, "remove_shared_probe", name=name)


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


# -- POWERING_OFF, TRANSFERRING (source) -----------------------------------------


async def step_powering_off(ctx: StepContext, job: Loaded) -> None:
    src = job.mig.source_compute
    assert src
    async with ctx.sessions() as s, s.begin():
        await records.event_start(s, job.inst.uuid, action_name(job.mig),
                                  "compute_resize_instance", src)
    started = utcnow()
    result = await _call(ctx, job, src, "power_off_for_migration", uuid=job.inst.uuid,
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


async def step_transferring(ctx: StepContext, job: Loaded) -> None:
    """Move the disks; resumable. The token kept on the migration row names one
    grant on the destination for the whole step, however often it runs: run
    again (a restarted conductor resumes TRANSFERRING), the destination keeps
    that grant and its partial files and journal, and the source sends only
    what the journal lacks. If the destination already holds the verified
    files (the first run finished just before the restart), nothing is sent."""
    mig = job.mig
    src, dest = mig.source_compute, mig.dest_compute
    assert src and dest and mig.dest_host
    names = [d["name"] for d in mig.disk_info]
    token = mig.transfer_token or await _keep_token(ctx, mig.uuid)
    files = {d["name"]: d["file_size"] for d in mig.disk_info}

    async def expect(wait: float | None = None) -> str:
        """Register the grant, or renew it (same token: partial files kept)."""
        reply = await _call(ctx, job, dest, "expect_transfer", rpc_timeout=wait, token=token,
                            migration_uuid=mig.uuid, instance_uuid=job.inst.uuid,
                            files=files, ttl=ctx.settings.transfer_token_ttl)
        return str((reply or {}).get("grant", "new"))

    grant = "new" if mig.shared_storage else await expect()
    if grant == "complete":
        note = "disks already verified on the destination"
    else:
        limit = mig.max_bandwidth or ctx.settings.transfer_max_bandwidth or None
        result = await _send_disks(ctx, job, src, None if mig.shared_storage else expect,
                                   uuid=job.inst.uuid, migration_uuid=mig.uuid,
                                   address=mig.dest_host, token=token, names=names,
                                   shared=bool(mig.shared_storage), rate_limit=limit,
                                   give_up=ctx.settings.transfer_give_up_s)
        note = ("shared storage: copied locally" if mig.shared_storage
                else "disks already verified on the destination"
                if result.get("state") == "complete" else _sent_note(result))
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, job.inst.uuid, action_name(mig), "compute_resize_instance")
        await advance_in(s, mig.uuid, Event.TRANSFERRED, expect=State.TRANSFERRING, note=note,
                         migration_fields={"bytes_done": Migration.bytes_total,
                                           "transfer_eta": 0.0, "transfer_token": None},
                         instance_fields={"host": dest, "node": dest})


async def _send_disks(ctx: StepContext, job: Loaded, src: str,
                      expect: Callable[[float], Awaitable[str]] | None,
                      **args: Any) -> dict[str, Any]:
    """Ask the source to send until it answers done (see ferry.compute.sending).

    Each ask returns within `transfer_poll_s`. An ask that gets no answer (the
    source agent restarting, the broker away) is repeated: the next one joins
    the send, or resumes it from the destination's journal. Only a source that
    answers nothing for `transfer_give_up_s` fails the step (and rolls back).
    `expect` (none on shared storage) renews the destination's grant after
    every ask, so a transfer longer than the grant's lifetime can still
    reconnect; and before a failure the source reports is taken as final, it
    asks the destination, which may hold every file already (a send that
    finished just before its agent restarted, its answer lost with it).
    """
    st = ctx.settings
    loop = asyncio.get_running_loop()
    answered = loop.time()
    while True:
        try:
            reply = await _call(ctx, job, src, "send_disks", wait=st.transfer_poll_s,
                                rpc_timeout=2 * st.transfer_poll_s + 5, **args)
        except BusError as exc:
            if _ask_again(exc) and loop.time() - answered <= st.transfer_give_up_s:
                await asyncio.sleep(min(st.transfer_poll_s, 5.0))
                continue
            if isinstance(exc, RemoteError) and expect is not None \
                    and await _grant(expect, st.transfer_give_up_s) == "complete":
                return {"state": "complete"}
            raise
        answered = loop.time()
        if (reply or {}).get("state") != "running":
            return dict(reply)
        if expect is not None:
            await _grant(expect, st.transfer_give_up_s)


async def _grant(expect: Callable[[float], Awaitable[str]], patience: float) -> str | None:
    """The destination's grant state, or None if it cannot tell within
    `patience` (at most its RPC timeout): a renewal that fails is no reason to
    stop a transfer that is still moving, nor a silent destination to wait
    longer before a rollback than the transfer itself would have."""
    try:
        return await expect(min(patience, Bus.timeout_for("expect_transfer", None)))
    except BusError as exc:
        log.info("destination grant check failed: %s", exc)
        return None


def _ask_again(exc: BusError) -> bool:
    """No answer (a timeout, the broker away), or a send its agent stopped when
    it shut down: the next ask joins the send or resumes it. A failure the
    source reports (the transfer gave up, a disk is missing) is final."""
    if isinstance(exc, RemoteError):
        return exc.exc_type == "SendInterrupted"
    return not isinstance(exc, BadMessage)


def _sent_note(result: dict[str, Any]) -> str:
    extra = []
    if result.get("attempts", 1) > 1:
        extra.append(f"{result['attempts']} attempts")
    if result.get("resumed_bytes"):
        extra.append(f"{result['resumed_bytes']} bytes resumed")
    more = f" ({', '.join(extra)})" if extra else ""
    return f"{result['bytes_sent']} bytes sent in {result['seconds']:.2f}s{more}, verified"


async def _keep_token(ctx: StepContext, migration_uuid: str) -> str:
    """A migration that reached TRANSFERRING without a token (made before tokens
    were kept): make one and keep it, unless a racing run kept one first."""
    async with ctx.sessions() as s, s.begin():
        await s.execute(update(Migration)
                        .where(Migration.uuid == migration_uuid,
                               Migration.transfer_token.is_(None))
                        .values(transfer_token=new_token())
                        .execution_options(synchronize_session=False))
        token = (await s.execute(select(Migration.transfer_token).where(
            Migration.uuid == migration_uuid))).scalar_one()
    assert token is not None
    return str(token)


# -- PREPARING, STARTING (destination) -------------------------------------------


async def step_preparing(ctx: StepContext, job: Loaded) -> None:
    dest = job.mig.dest_compute
    assert dest
    async with ctx.sessions() as s, s.begin():
        await records.event_start(s, job.inst.uuid, action_name(job.mig),
                                  "compute_finish_resize", dest)
    await _call(ctx, job, dest, "prepare_migrated_instance", instance=job.payload(),
                image=job.image)
    await advance(ctx.sessions, job.mig.uuid, Event.PREPARED, expect=State.PREPARING)


async def step_starting(ctx: StepContext, job: Loaded) -> None:
    mig = job.mig
    dest = mig.dest_compute
    assert dest
    power_on = mig.old_vm_state != "stopped"
    power_state = await _call(ctx, job, dest, "finish_migration", instance=job.payload(),
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
    await _call(ctx, job, src, "confirm_migration", uuid=job.inst.uuid)
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
    await _call(ctx, job, dest, "revert_migration", uuid=job.inst.uuid, migration_uuid=mig.uuid,
                shared=bool(mig.shared_storage))
    async with ctx.sessions() as s, s.begin():
        await records.event_finish(s, job.inst.uuid, "revertResize", "compute_revert_resize")
        await records.event_start(s, job.inst.uuid, "revertResize",
                                  "compute_finish_revert_resize", src)
    power_state = await _call(ctx, job, src, "finish_revert_migration",
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
            await _call(ctx, job, dest, "revert_migration",
                        rpc_timeout=ctx.settings.rollback_dest_timeout, **args)
        except Exception as exc:
            # Queued for the host: it drops the grant and the partial files
            # when it serves its queue again.
            await _cast(ctx, job, dest, "revert_migration", **args)
            notes.append(f"cleanup on {dest} failed ({exc}); queued for when it is back")
    power_state = None
    if source_touched(mig):
        power_state = await _call(ctx, job, src, "finish_revert_migration",
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
