"""RabbitMQ bus (aio-pika): the same `Bus` interface as the in-process bus.

- One durable queue per topic (`<prefix>.compute.<host>`, `<prefix>.conductor`);
  several consumers of a queue compete (several conductors).
- Messages are persistent and published with publisher confirms, so a broker
  restart loses nothing that was accepted.
- A message is acknowledged only after its handler finished (a consumer that
  dies mid-step gets it redelivered to another). A redelivered duplicate is
  recognised by message id: it is not run twice, but it is answered (with
  the first run's outcome), since the first reply may have been lost.
- A message that can never succeed (unknown method, arguments that do not fit)
  is rejected without requeue into the dead-letter queue `<prefix>.dead`, and
  logged; handler failures are replies, not redeliveries.
- `call` replies come back on a private reply queue, matched by correlation id.
- The connection is robust: aio-pika reconnects with backoff and restores
  queues and consumers; publishing retries until the broker is back or the
  call's timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from ferry.bus.base import BadMessage, Bus, BusError, BusTimeout, Handler, RemoteError

log = logging.getLogger(__name__)

DEDUPE_WINDOW = 10_000


class BrokerUnavailable(BusError):
    pass


class RabbitBus(Bus):
    def __init__(self, url: str, *, prefix: str = "ferry", prefetch: int = 16,
                 connect_timeout: float = 10.0, publish_timeout: float = 5.0) -> None:
        self.url = url
        # How long a send waits for an unreachable broker before giving up, so an
        # API request answers 503 quickly instead of hanging for the method's timeout.
        self.publish_timeout = publish_timeout
        self.prefix = prefix
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self._conn: AbstractRobustConnection | None = None
        self._chan: AbstractRobustChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._consumers: dict[str, dict[str, tuple[AbstractQueue, str]]] = {}
        # Outcomes of handled messages (by message id), to answer redeliveries.
        self._done: OrderedDict[str, tuple[Any, dict[str, str] | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[Any, dict[str, str] | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            self._conn = await aio_pika.connect_robust(self.url, timeout=self.connect_timeout)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"cannot reach the broker at {_safe(self.url)}: {exc}") \
                from exc
        chan = await self._conn.channel(publisher_confirms=True)
        assert isinstance(chan, AbstractRobustChannel)
        self._chan = chan
        await chan.set_qos(prefetch_count=self.prefetch)
        dlx = await chan.declare_exchange(f"{self.prefix}.dlx", aio_pika.ExchangeType.FANOUT,
                                          durable=True)
        dead = await chan.declare_queue(f"{self.prefix}.dead", durable=True)
        await dead.bind(dlx)
        self._reply_queue = await chan.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)

    def _queue_name(self, topic: str) -> str:
        return f"{self.prefix}.{topic}"

    async def _declare(self, topic: str) -> AbstractQueue:
        assert self._chan is not None, "connect() first"
        return await self._chan.declare_queue(
            self._queue_name(topic), durable=True,
            arguments={"x-dead-letter-exchange": f"{self.prefix}.dlx"})

    async def _declare_for_send(self, topic: str) -> None:
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self._declare(topic)
        except (TimeoutError, aio_pika.exceptions.AMQPError, ConnectionError,
                RuntimeError) as exc:
            raise BrokerUnavailable(f"the broker is unreachable: {exc}") from exc

    async def _publish(self, routing_key: str, message: aio_pika.Message,
                       deadline: float) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                assert self._chan is not None, "connect() first"
                await self._chan.default_exchange.publish(message, routing_key=routing_key)
                return
            except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                if loop.time() + delay > deadline:
                    raise BrokerUnavailable(f"the broker did not take the message: {exc}") \
                        from exc
                log.warning("publish to %s failed (%s); retrying", routing_key, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- sending ---------------------------------------------------------------------

    def _message(self, method: str, args: dict[str, Any] | None, **kw: Any) -> aio_pika.Message:
        body = json.dumps({"method": method, "args": args or {}}).encode()
        return aio_pika.Message(body, content_type="application/json",
                                message_id=uuid.uuid4().hex,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **kw)

    async def call(self, topic: str, method: str, args: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        wait = self.timeout_for(method, timeout)
        assert self._reply_queue is not None, "connect() first"
        corr = uuid.uuid4().hex
        msg = self._message(method, args, correlation_id=corr,
                            reply_to=self._reply_queue.name,
                            expiration=max(int(wait), 1))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[corr] = fut
        try:
            await self._declare_for_send(topic)
            await self._publish(self._queue_name(topic), msg,
                                loop.time() + min(wait, self.publish_timeout))
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            raise BusTimeout(f"no reply to {method} on {topic} within {wait:.0f}s") from None
        finally:
            self._pending.pop(corr, None)

    async def cast(self, topic: str, method: str, args: dict[str, Any] | None = None) -> None:
        self.timeout_for(method, None)  # refuse unknown methods at the sender
        msg = self._message(method, args)
        deadline = asyncio.get_running_loop().time() + self.publish_timeout
        await self._declare_for_send(topic)
        await self._publish(self._queue_name(topic), msg, deadline)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.get(message.correlation_id or "")
        if fut is None or fut.done():
            return  # the caller gave up already
        reply = json.loads(message.body)
        if reply.get("error"):
            fut.set_exception(RemoteError(reply["error"]["type"], reply["error"]["message"]))
        else:
            fut.set_result(reply.get("result"))

    # -- serving ---------------------------------------------------------------------

    async def serve(self, topic: str, handler: Handler) -> str:
        queue = await self._declare(topic)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.create_task(self._handle(topic, message, handler))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        tag = await queue.consume(on_message, no_ack=False)
        self._consumers.setdefault(topic, {})[tag] = (queue, tag)
        return tag

    async def unserve(self, topic: str, tag: str | None = None) -> None:
        consumers = self._consumers.get(topic, {})
        for t in [tag] if tag is not None else list(consumers):
            entry = consumers.pop(t, None) if t is not None else None
            if entry is not None:
                with contextlib.suppress(Exception):
                    await entry[0].cancel(entry[1])

    async def _handle(self, topic: str, message: AbstractIncomingMessage,
                      handler: Handler) -> None:
        msg_id = message.message_id or ""
        done = self._done.get(msg_id) if msg_id else None
        running = self._inflight.get(msg_id) if msg_id else None
        if done is not None or running is not None:
            # A redelivery (the broker restarted, or our ack was lost): never run
            # it twice, but do answer it, since the first reply may have been lost.
            log.info("duplicate delivery of %s on %s: replying, not re-running", msg_id, topic)
            if done is None:
                assert running is not None
                done = await asyncio.shield(running)
            await self._reply(message, done[0], done[1])
            await message.ack()
            return
        try:
            body = json.loads(message.body)
            method, args = body["method"], body["args"]
        except (ValueError, KeyError, TypeError) as exc:
            log.error("dead-lettering a malformed message on %s: %s", topic, exc)
            await message.reject(requeue=False)
            return
        outcome: asyncio.Future[tuple[Any, dict[str, str] | None]] = \
            asyncio.get_running_loop().create_future()
        if msg_id:
            self._inflight[msg_id] = outcome
        error: dict[str, str] | None = None
        result: Any = None
        try:
            try:
                result = await handler(method, args)
                json.dumps(result)
            except BadMessage as exc:
                log.error("dead-lettering %s on %s: %s", method, topic, exc)
                error = {"type": type(exc).__name__, "message": str(exc)}
                await self._reply(message, None, error)
                await message.reject(requeue=False)
                return
            except Exception as exc:
                if not message.reply_to:
                    log.exception("cast %s on %s failed", method, topic)
                error = {"type": type(exc).__name__, "message": str(exc)}
        finally:
            outcome.set_result((result, error))
            if msg_id:
                self._inflight.pop(msg_id, None)
                self._done[msg_id] = (result, error)
                if len(self._done) > DEDUPE_WINDOW:
                    self._done.popitem(last=False)
        await self._reply(message, result, error)
        await message.ack()

    async def _reply(self, message: AbstractIncomingMessage, result: Any,
                     error: dict[str, str] | None) -> None:
        if not message.reply_to:
            return
        body = json.dumps({"result": None if error else result, "error": error}).encode()
        reply = aio_pika.Message(body, correlation_id=message.correlation_id,
                                 content_type="application/json")
        with contextlib.suppress(Exception):  # the caller may be gone; the work is done
            assert self._chan is not None
            await self._chan.default_exchange.publish(reply, routing_key=message.reply_to)

    async def close(self) -> None:
        for topic in list(self._consumers):
            await self.unserve(topic)
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
