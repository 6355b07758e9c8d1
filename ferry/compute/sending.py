"""Disk sends that outlive the RPC that asked for them.

A disk of terabytes takes hours to send. Held inside one RPC, that would
need an RPC timeout of hours, and on RabbitMQ the request would sit
unacknowledged past the broker's `consumer_timeout` (30 min by default),
which closes the channel. So the source runs each send as a task of its own,
keyed by migration, and `send_disks` only joins it for a bounded wait: the
conductor asks again until it is done, each ask a short RPC. An ask after
the agent restarted finds no task and starts one, which resumes from the
destination's journal.

A send that finished is remembered (by migration and token) so that a late
ask gets the same answer instead of a second send. Any other operation on
the instance stops a running send first (see ComputeManager._dispatch): a
rollback must not race a send still reading the disks it restores.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

_REMEMBERED = 64

Result = dict[str, Any]


class SendInterrupted(Exception):
    """The send was stopped before it ended (the agent is stopping, or a later
    operation on the instance came): the asker may ask again, which resumes it."""


@dataclass
class _Send:
    token: str
    instance: str
    task: asyncio.Task[Result]


class DiskSends:
    def __init__(self) -> None:
        self._running: dict[str, _Send] = {}
        self._finished: OrderedDict[str, tuple[str, Result]] = OrderedDict()

    def running(self, migration_uuid: str) -> bool:
        send = self._running.get(migration_uuid)
        return send is not None and not send.task.done()

    async def join(self, migration_uuid: str, token: str, instance: str,
                   start: Callable[[], Coroutine[Any, Any, Result]],
                   wait: float | None) -> Result | None:
        """The send's result, starting it unless it runs or ran already; None if
        it is still running after `wait` seconds (None: wait for the end).
        A failed send raises its error once, to the ask that sees it end."""
        done = self._finished.get(migration_uuid)
        if done is not None and done[0] == token:
            return done[1]
        send = self._running.get(migration_uuid)
        if send is not None and send.token != token:
            await self._stop(migration_uuid)  # a new grant: the old send is void
            send = None
        if send is None:
            task = asyncio.get_running_loop().create_task(start())
            # Its error is raised to the ask that sees it end; if none does (the
            # conductor moved on), it must not be reported as never retrieved.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            send = _Send(token, instance, task)
            self._running[migration_uuid] = send
        # asyncio.wait, unlike wait_for, leaves the send running when this ask is
        # cancelled or times out.
        await asyncio.wait({send.task}, timeout=wait)
        if not send.task.done():
            return None
        if self._running.get(migration_uuid) is send:
            del self._running[migration_uuid]
        if send.task.cancelled():
            raise SendInterrupted(f"the send for migration {migration_uuid} was stopped")
        result = send.task.result()
        self._finished[migration_uuid] = (token, result)
        while len(self._finished) > _REMEMBERED:
            self._finished.popitem(last=False)
        return result

    async def stop_instance(self, instance: str) -> None:
        """Stop every send of this instance and wait until it has stopped."""
        for migration_uuid in [m for m, s in self._running.items() if s.instance == instance]:
            await self._stop(migration_uuid)

    async def close(self) -> None:
        for migration_uuid in list(self._running):
            await self._stop(migration_uuid)

    async def _stop(self, migration_uuid: str) -> None:
        send = self._running.pop(migration_uuid, None)
        if send is None:
            return
        send.task.cancel()
        await asyncio.gather(send.task, return_exceptions=True)
