"""The conductor's limit on migrations in flight (`Slots`), and which database
errors the runner retries (`is_transient`)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from ferry.conductor.runner import Slots, patiently
from ferry.db.session import is_transient


async def _holder(slots: Slots, key: str, order: list[str], done: asyncio.Event) -> None:
    await slots.take(key)
    order.append(key)
    try:
        await done.wait()
    finally:
        slots.give()


async def test_slots_admit_up_to_the_cap_then_in_request_order() -> None:
    slots = Slots(2)
    order: list[str] = []
    events = {k: asyncio.Event() for k in "abcde"}
    tasks = {k: asyncio.create_task(_holder(slots, k, order, events[k])) for k in "abcde"}
    await asyncio.sleep(0)
    assert order == ["a", "b"] and slots.busy == 2
    assert slots.waiting() == ["c", "d", "e"]
    events["b"].set()
    await asyncio.sleep(0.01)
    assert order == ["a", "b", "c"] and slots.waiting() == ["d", "e"]
    # A waiter that gives up leaves the queue; the next one keeps its place.
    tasks["d"].cancel()
    await asyncio.sleep(0.01)
    assert slots.waiting() == ["e"]
    events["a"].set()
    await asyncio.sleep(0.01)
    assert order == ["a", "b", "c", "e"] and slots.busy == 2
    events["c"].set()
    events["e"].set()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert slots.busy == 0 and slots.waiting() == []


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    slots = Slots(1)
    await slots.take("a")
    b = asyncio.create_task(slots.take("b"))
    c = asyncio.create_task(slots.take("c"))
    await asyncio.sleep(0)
    slots.give()  # hands the slot to b...
    b.cancel()    # ...which is cancelled before it runs: c must get it
    await asyncio.sleep(0.01)
    assert b.cancelled() and c.done() and not c.cancelled()
    assert slots.busy == 1 and slots.waiting() == []
    slots.give()
    assert slots.busy == 0


async def test_no_cap_means_no_waiting() -> None:
    slots = Slots(0)
    for k in range(100):
        await slots.take(str(k))
    assert slots.busy == 100 and slots.waiting() == []


def _pool_timeout() -> Exception:
    """A real "QueuePool limit ... reached" from a pool of one connection."""
    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=1, max_overflow=0,
                           pool_timeout=0.05)
    try:
        with engine.connect(), pytest.raises(Exception) as info:
            engine.connect()
    finally:
        engine.dispose()
    assert isinstance(info.value, Exception)
    return info.value


def test_a_pool_checkout_timeout_is_transient() -> None:
    exc = _pool_timeout()
    assert "QueuePool limit" in str(exc)
    assert is_transient(exc)


async def test_bookkeeping_outlasts_pool_timeouts_but_not_real_errors() -> None:
    timeout = _pool_timeout()
    calls: list[str] = []

    async def busy_pool_then_ok(key: str) -> str:
        calls.append(key)
        if len(calls) < 3:
            raise timeout
        return "loaded"

    assert await patiently(busy_pool_then_ok, "m1") == "loaded"
    assert calls == ["m1"] * 3

    async def broken(key: str) -> str:
        calls.append(key)
        raise RuntimeError("no such migration")

    calls.clear()
    with pytest.raises(RuntimeError):
        await patiently(broken, "m2")
    assert calls == ["m2"]


def test_which_database_errors_are_transient() -> None:
    def op_error(text: str) -> OperationalError:
        return OperationalError("UPDATE migrations ...", {}, Exception(text))

    assert is_transient(op_error("database is locked"))
    assert is_transient(op_error("deadlock detected"))
    assert not is_transient(op_error("no such table: migrations"))
    assert not is_transient(ValueError("QueuePool limit reached"))  # not a pool's error
    assert not is_transient(RuntimeError("boom"))
