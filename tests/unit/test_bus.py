"""The in-process bus (`ferry.bus.memory`) with the catalogue-checking endpoint
dispatcher (`ferry.bus.base.endpoint_handler`).

A small fake compute endpoint stands in for `ComputeManager`: real objects on
a real bus, no mocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ferry.bus.base import (
    Bus,
    BusError,
    BusTimeout,
    RemoteError,
    UnknownMethod,
    endpoint_handler,
)
from ferry.bus.catalogue import CATALOGUE, CONDUCTOR_TOPIC, compute_topic
from ferry.bus.memory import MemoryBus

TOPIC = compute_topic("host1")


class FakeCompute:
    """Implements a few catalogue methods the way a compute host would."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def power_state(self, uuid: str) -> dict[str, Any]:
        return {"uuid": uuid, "state": 1, "disks": ("disk", "disk.config")}

    async def console_output(self, uuid: str) -> str:
        raise ValueError(f"no console for {uuid}")

    async def host_resources(self) -> Any:
        return {"not", "json"}  # a set: cannot be sent back

    async def start_instance(self, uuid: str) -> None:
        self.started.append(uuid)
        self.arrived.set()

    async def stop_instance(self, uuid: str) -> str:
        await self.release.wait()
        return f"stopped {uuid}"


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    b = MemoryBus()
    yield b
    await b.close()


@pytest.fixture
async def compute(bus: MemoryBus) -> FakeCompute:
    endpoint = FakeCompute()
    await bus.serve(TOPIC, endpoint_handler(endpoint, "compute"))
    return endpoint


async def _until(cond: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


# -- call ---------------------------------------------------------------------------


async def test_call_returns_the_handlers_result_as_json(bus: MemoryBus,
                                                        compute: FakeCompute) -> None:
    result = await bus.call(TOPIC, "power_state", {"uuid": "u1"})
    # It crossed the wire as JSON: the tuple comes back as a list.
    assert result == {"uuid": "u1", "state": 1, "disks": ["disk", "disk.config"]}


async def test_handler_exception_comes_back_as_remote_error(bus: MemoryBus,
                                                            compute: FakeCompute) -> None:
    with pytest.raises(RemoteError) as err:
        await bus.call(TOPIC, "console_output", {"uuid": "u1"})
    assert err.value.exc_type == "ValueError"
    assert err.value.message == "no console for u1"
    assert str(err.value) == "ValueError: no console for u1"
    assert isinstance(err.value, BusError)


async def test_handler_result_that_is_not_json_is_a_remote_type_error(
        bus: MemoryBus, compute: FakeCompute) -> None:
    with pytest.raises(RemoteError) as err:
        await bus.call(TOPIC, "host_resources")
    assert err.value.exc_type == "TypeError"


async def test_a_failed_call_does_not_stop_the_consumer(bus: MemoryBus,
                                                        compute: FakeCompute) -> None:
    with pytest.raises(RemoteError):
        await bus.call(TOPIC, "console_output", {"uuid": "u1"})
    assert (await bus.call(TOPIC, "power_state", {"uuid": "u2"}))["uuid"] == "u2"


async def test_call_timeout_is_bus_timeout(bus: MemoryBus, compute: FakeCompute) -> None:
    with pytest.raises(BusTimeout, match=r"stop_instance on compute\.host1"):
        await bus.call(TOPIC, "stop_instance", {"uuid": "u1"}, timeout=0.05)


async def test_call_to_a_topic_nobody_serves_times_out(bus: MemoryBus) -> None:
    with pytest.raises(BusTimeout):
        await bus.call(compute_topic("ghost"), "power_state", {"uuid": "u1"}, timeout=0.05)


async def test_slow_message_does_not_block_the_next_one(bus: MemoryBus,
                                                        compute: FakeCompute) -> None:
    slow = asyncio.create_task(bus.call(TOPIC, "stop_instance", {"uuid": "u1"}, timeout=2))
    assert (await bus.call(TOPIC, "power_state", {"uuid": "u2"}, timeout=1))["uuid"] == "u2"
    compute.release.set()
    assert await slow == "stopped u1"


def test_catalogue_timeouts_are_used_when_none_is_given() -> None:
    assert Bus.timeout_for("send_disks", None) == CATALOGUE["send_disks"].timeout == 300
    assert Bus.timeout_for("send_disks", 5) == 5


# -- unknown methods ------------------------------------------------------------------


async def test_endpoint_handler_refuses_methods_outside_the_catalogue() -> None:
    handle = endpoint_handler(FakeCompute(), "compute")
    with pytest.raises(UnknownMethod, match="'format_disk' is not a compute RPC method"):
        await handle("format_disk", {})
    # In the catalogue, but served by the conductor, not by compute hosts.
    with pytest.raises(UnknownMethod, match="'migrate_server' is not a compute RPC method"):
        await handle("migrate_server", {})
    # In the catalogue for compute, but this endpoint lacks it.
    with pytest.raises(UnknownMethod, match="FakeCompute does not implement 'spawn'"):
        await handle("spawn", {})
    # Python attributes that are not RPC methods are not reachable either.
    with pytest.raises(UnknownMethod):
        await handle("__init__", {})


async def test_unknown_method_reaching_an_endpoint_is_a_remote_error(
        bus: MemoryBus, compute: FakeCompute) -> None:
    with pytest.raises(RemoteError) as err:
        await bus.call(TOPIC, "spawn", {}, timeout=1)
    assert err.value.exc_type == "UnknownMethod"


async def test_cast_and_call_refuse_unknown_methods_at_the_sender(bus: MemoryBus) -> None:
    seen: list[str] = []

    async def raw(method: str, args: dict[str, Any]) -> None:
        seen.append(method)

    await bus.serve(CONDUCTOR_TOPIC, raw)
    with pytest.raises(UnknownMethod, match="not in the RPC catalogue"):
        await bus.cast(CONDUCTOR_TOPIC, "drop_tables", {})
    with pytest.raises(UnknownMethod, match="not in the RPC catalogue"):
        await bus.call(CONDUCTOR_TOPIC, "drop_tables", {})
    await bus.cast(CONDUCTOR_TOPIC, "report_state", {})  # a known one still goes through
    await _until(lambda: seen)
    assert seen == ["report_state"]


async def test_call_with_explicit_timeout_refuses_unknown_methods(bus: MemoryBus) -> None:
    with pytest.raises(UnknownMethod):
        await bus.call(compute_topic("ghost"), "drop_tables", {}, timeout=0.05)


# -- queueing --------------------------------------------------------------------------


async def test_casts_wait_in_the_queue_until_a_consumer_serves(bus: MemoryBus) -> None:
    await bus.cast(TOPIC, "start_instance", {"uuid": "u1"})
    await bus.cast(TOPIC, "start_instance", {"uuid": "u2"})
    endpoint = FakeCompute()
    await asyncio.sleep(0.01)
    assert endpoint.started == []
    await bus.serve(TOPIC, endpoint_handler(endpoint, "compute"))
    await _until(lambda: len(endpoint.started) == 2)
    assert sorted(endpoint.started) == ["u1", "u2"]
    await asyncio.sleep(0.01)
    assert len(endpoint.started) == 2  # delivered once each


async def test_messages_sent_after_unserve_wait_for_the_next_consumer(
        bus: MemoryBus, compute: FakeCompute) -> None:
    await bus.unserve(TOPIC)
    await bus.cast(TOPIC, "start_instance", {"uuid": "while-down"})
    await asyncio.sleep(0.01)
    assert compute.started == []
    restarted = FakeCompute()
    await bus.serve(TOPIC, endpoint_handler(restarted, "compute"))
    await _until(lambda: restarted.started)
    assert restarted.started == ["while-down"]
    assert compute.started == []


async def test_a_call_made_before_the_consumer_starts_is_answered(bus: MemoryBus) -> None:
    pending = asyncio.create_task(bus.call(TOPIC, "power_state", {"uuid": "u1"}, timeout=2))
    await asyncio.sleep(0.01)
    assert not pending.done()
    await bus.serve(TOPIC, endpoint_handler(FakeCompute(), "compute"))
    assert (await pending)["uuid"] == "u1"


async def test_consumers_of_one_topic_compete(bus: MemoryBus, compute: FakeCompute) -> None:
    other = FakeCompute()
    tag = await bus.serve(TOPIC, endpoint_handler(other, "compute"))
    for i in range(20):
        await bus.cast(TOPIC, "start_instance", {"uuid": f"u{i}"})
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(compute.started) + len(other.started) == 20:
            break
    # every message went to exactly one consumer
    assert sorted(compute.started + other.started) == sorted(f"u{i}" for i in range(20))
    await bus.unserve(TOPIC, tag)


# -- JSON only ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes"])
async def test_non_json_arguments_are_refused_at_send_time(
        bus: MemoryBus, compute: FakeCompute, value: object) -> None:
    with pytest.raises(TypeError, match="JSON serializable"):
        await bus.cast(TOPIC, "start_instance", {"uuid": value})
    with pytest.raises(TypeError, match="JSON serializable"):
        await bus.call(TOPIC, "start_instance", {"uuid": value}, timeout=1)
    await asyncio.sleep(0.01)
    assert compute.started == []  # nothing was delivered


async def test_a_refused_call_leaves_no_pending_reply_behind(bus: MemoryBus) -> None:
    with pytest.raises(TypeError):
        await bus.call(TOPIC, "power_state", {"uuid": object()}, timeout=1)
    assert bus._pending == {}
