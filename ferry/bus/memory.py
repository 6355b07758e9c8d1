"""In-process bus for the embedded default and functional tests.

It behaves like a broker, not like a function call: messages are JSON-encoded
and decoded (so nothing unserialisable slips through), each topic is a queue
that keeps messages while no consumer serves it (a restarted conductor finds
what was cast to it), and every message runs in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from ferry.bus.base import Bus, BusError, BusTimeout, Handler, RemoteError

log = logging.getLogger(__name__)


@dataclass
class Hold:
    reached: asyncio.Event  # set when the held message arrived
    released: asyncio.Event  # set it to let the message run


class MemoryBus(Bus):
    def __init__(self) -> None:
        # (topic, method) -> [(message, after)]: failures to inject, used once each.
        self._faults: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        self._holds: dict[tuple[str, str], list[Hold]] = {}
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._consumers: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _queue(self, topic: str) -> asyncio.Queue[dict[str, Any]]:
        return self._queues.setdefault(topic, asyncio.Queue())


    async def call(self, topic: str, method: str, args: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        wait = self.timeout_for(method, timeout)
        msg_id = uuid.uuid4().hex
        body = json.loads(json.dumps({"method": method, "args": args or {}, "id": msg_id,
                                      "reply": True}))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._queue(topic).put(body)
        try:
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            raise BusTimeout(f"no reply to {method} on {topic} within {wait:.0f}s") from None
        finally:
            self._pending.pop(msg_id, None)

    async def cast(self, topic: str, method: str, args: dict[str, Any] | None = None) -> None:
        self.timeout_for(method, None)  # refuse unknown methods at the sender too
        body = json.loads(json.dumps({"method": method, "args": args or {},
                                      "id": uuid.uuid4().hex, "reply": False}))
        await self._queue(topic).put(body)

    async def serve(self, topic: str, handler: Handler) -> str:
        # Several consumers of one topic compete for its messages, as several
        # conductors share the "conductor" queue on a broker.
        tag = uuid.uuid4().hex
        queue = self._queue(topic)
        self._consumers.setdefault(topic, {})[tag] = asyncio.create_task(
            self._consume(topic, queue, handler))
        return tag

    async def unserve(self, topic: str, tag: str | None = None) -> None:
        consumers = self._consumers.get(topic, {})
        for t in [tag] if tag is not None else list(consumers):
            task = consumers.pop(t, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _consume(self, topic: str, queue: asyncio.Queue[dict[str, Any]],
                       handler: Handler) -> None:
        while True:
            msg = await queue.get()
            task = asyncio.create_task(self._run(topic, msg, handler))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def inject_failure(self, topic: str, method: str, message: str = "injected",
                       *, after: bool = False) -> None:
        """Make the next `method` on `topic` fail, as a broken host would.

        With `after`, the handler runs first and only the reply is lost: the
        caller sees a failure although the work was done (tests idempotency).
        """
        self._faults.setdefault((topic, method), []).append((message, after))

    def hold(self, topic: str, method: str) -> Hold:
        """Make the next `method` on `topic` wait, before it runs, until released:
        a slow host, for tests that stop a conductor while a step is in flight."""
        gate = Hold(asyncio.Event(), asyncio.Event())
        self._holds.setdefault((topic, method), []).append(gate)
        return gate

    def _take_fault(self, topic: str, method: str) -> tuple[str, bool] | None:
        pending = self._faults.get((topic, method))
        return pending.pop(0) if pending else None

    async def _run(self, topic: str, msg: dict[str, Any], handler: Handler) -> None:
        fault = self._take_fault(topic, msg["method"])
        gates = self._holds.get((topic, msg["method"]))
        if gates:
            gate = gates.pop(0)
            gate.reached.set()
            await gate.released.wait()
        try:
            if fault is not None and not fault[1]:
                raise BusError(f"{fault[0]} ({msg['method']} on {topic})")
            result = json.loads(json.dumps(await handler(msg["method"], msg["args"])))
            if fault is not None:
                raise BusError(f"{fault[0]} (reply of {msg['method']} on {topic} lost)")
            error: RemoteError | None = None
        except asyncio.CancelledError:
            error = RemoteError("Cancelled", "the serving side stopped")
            result = None
        except Exception as exc:
            if not msg["reply"]:
                log.exception("cast %s on %s failed", msg["method"], topic)
            error = RemoteError(type(exc).__name__, str(exc))
            result = None
        fut = self._pending.get(msg["id"]) if msg["reply"] else None
        if fut is not None and not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    async def close(self) -> None:
        for topic in list(self._consumers):
            await self.unserve(topic)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
