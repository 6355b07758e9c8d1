"""The RabbitMQ bus against the real broker on this machine (127.0.0.1:5672)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from ferry.bus.base import BusTimeout, RemoteError, endpoint_handler
from ferry.bus.rabbitmq import BrokerUnavailable, RabbitBus

URL = os.environ.get("FERRY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
TOPIC = "compute.h1"


class Endpoint:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate: asyncio.Event | None = None

    async def start_instance(self, uuid: str) -> int:
        if self.gate is not None:
            await self.gate.wait()
        self.started.append(uuid)
        return 1

    async def power_state(self, uuid: str) -> int:
        raise ValueError(f"no such guest {uuid}")


@pytest.fixture
def prefix() -> str:
    return f"ferrytest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def buses(prefix: str) -> AsyncIterator[list[RabbitBus]]:
    made: list[RabbitBus] = []
    yield made
    for b in made:
        await b.close()
    conn = await aio_pika.connect(URL)
    chan = await conn.channel()
    for name in (f"{prefix}.{TOPIC}", f"{prefix}.dead"):
        await chan.queue_delete(name)
    await chan.exchange_delete(f"{prefix}.dlx")
    await conn.close()


async def _bus(buses: list[RabbitBus], prefix: str) -> RabbitBus:
    b = RabbitBus(URL, prefix=prefix)
    await b.connect()
    buses.append(b)
    return b


async def test_call_cast_errors_and_timeouts(buses: list[RabbitBus], prefix: str) -> None:
    server, client = await _bus(buses, prefix), await _bus(buses, prefix)
    ep = Endpoint()
    await server.serve(TOPIC, endpoint_handler(ep, "compute"))
    assert await client.call(TOPIC, "start_instance", {"uuid": "a"}, timeout=10) == 1
    with pytest.raises(RemoteError) as err:
        await client.call(TOPIC, "power_state", {"uuid": "b"}, timeout=10)
    assert err.value.exc_type == "ValueError" and "no such guest b" in err.value.message
    ep.gate = asyncio.Event()
    with pytest.raises(BusTimeout):
        await client.call(TOPIC, "start_instance", {"uuid": "slow"}, timeout=1)
    ep.gate.set()


async def test_messages_wait_for_a_consumer(buses: list[RabbitBus], prefix: str) -> None:
    client = await _bus(buses, prefix)
    for i in range(3):
        await client.cast(TOPIC, "start_instance", {"uuid": f"u{i}"})
    server = await _bus(buses, prefix)
    ep = Endpoint()
    await server.serve(TOPIC, endpoint_handler(ep, "compute"))
    for _ in range(100):
        if len(ep.started) == 3:
            break
        await asyncio.sleep(0.05)
    assert sorted(ep.started) == ["u0", "u1", "u2"]


async def test_bad_messages_are_dead_lettered_not_redelivered(buses: list[RabbitBus],
                                                             prefix: str) -> None:
    server, client = await _bus(buses, prefix), await _bus(buses, prefix)
    ep = Endpoint()
    await server.serve(TOPIC, endpoint_handler(ep, "compute"))
    # Wrong arguments for a known method: refused, nothing acted on.
    with pytest.raises(RemoteError) as err:
        await client.call(TOPIC, "start_instance", {"uid": "x"}, timeout=10)
    assert err.value.exc_type == "BadMessage"
    # An unknown method sent past the catalogue (a foreign or newer sender).
    conn = await aio_pika.connect(URL)
    chan = await conn.channel()
    await chan.default_exchange.publish(
        aio_pika.Message(json.dumps({"method": "drop_tables", "args": {}}).encode(),
                         message_id="m1"), routing_key=f"{prefix}.{TOPIC}")
    await chan.default_exchange.publish(aio_pika.Message(b"not json", message_id="m2"),
                                        routing_key=f"{prefix}.{TOPIC}")
    await conn.close()
    for _ in range(40):
        dead_msgs = await _dead_bodies(prefix)
        if len(dead_msgs) >= 3:
            break
        await asyncio.sleep(0.1)
    assert len(dead_msgs) == 3, dead_msgs
    assert ep.started == []


async def _dead_bodies(prefix: str) -> list[bytes]:
    conn = await aio_pika.connect(URL)
    chan = await conn.channel()
    q = await chan.declare_queue(f"{prefix}.dead", durable=True)
    out = []
    while (m := await q.get(no_ack=False, fail=False)) is not None:
        out.append(m.body)
    await conn.close()  # unacked: they stay in the dead-letter queue
    return out


async def test_duplicate_delivery_runs_once(buses: list[RabbitBus], prefix: str) -> None:
    server = await _bus(buses, prefix)
    ep = Endpoint()
    await server.serve(TOPIC, endpoint_handler(ep, "compute"))
    conn = await aio_pika.connect(URL)
    chan = await conn.channel()
    body = json.dumps({"method": "start_instance", "args": {"uuid": "once"}}).encode()
    for _ in range(2):
        await chan.default_exchange.publish(aio_pika.Message(body, message_id="same-id"),
                                            routing_key=f"{prefix}.{TOPIC}")
    await conn.close()
    await asyncio.sleep(1)
    assert ep.started == ["once"]


async def test_unfinished_message_goes_to_another_consumer(buses: list[RabbitBus],
                                                           prefix: str) -> None:
    a, b, client = (await _bus(buses, prefix), await _bus(buses, prefix),
                    await _bus(buses, prefix))
    ep_a, ep_b = Endpoint(), Endpoint()
    ep_a.gate = asyncio.Event()  # A takes the message and never finishes it
    await a.serve(TOPIC, endpoint_handler(ep_a, "compute"))
    await client.cast(TOPIC, "start_instance", {"uuid": "survivor"})
    await asyncio.sleep(0.5)
    await b.serve(TOPIC, endpoint_handler(ep_b, "compute"))
    buses.remove(a)
    await a.close()  # A dies without acknowledging
    for _ in range(100):
        if ep_b.started:
            break
        await asyncio.sleep(0.05)
    assert ep_b.started == ["survivor"] and ep_a.started == []


async def test_unreachable_broker_is_a_clear_error() -> None:
    bus = RabbitBus("amqp://guest:secret@127.0.0.1:1/", connect_timeout=2)
    with pytest.raises(BrokerUnavailable) as err:
        await bus.connect()
    assert "127.0.0.1:1" in str(err.value) and "secret" not in str(err.value)
