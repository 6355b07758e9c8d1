"""The TRANSFERRING step: the disks travel from the source to the destination.

Resumable end to end: one grant per migration on the destination (its token
kept on the migration row), a send on the source that outlives the RPCs
asking for it (`ferry.compute.sending`), and a conductor that keeps asking,
renews the grant, and asks the destination before it takes a failure as
final. docs/architecture.md, "The transfer inside a migration", has the why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update

from ferry.bus.base import BadMessage, Bus, BusError, RemoteError
from ferry.conductor import records
from ferry.conductor.context import Loaded, StepContext, action_name, call_host
from ferry.conductor.states import Event, State
from ferry.conductor.transitions import advance_in
from ferry.db.models import Migration
from ferry.transfer import new_token

log = logging.getLogger(__name__)


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
        reply = await call_host(ctx, job, dest, "expect_transfer", rpc_timeout=wait, token=token,
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
            reply = await call_host(ctx, job, src, "send_disks", wait=st.transfer_poll_s,
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
