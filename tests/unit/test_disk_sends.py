"""Disk sends that outlive the RPC asking for them (`ferry.compute.sending`, and
the source's `send_disks`): asks join one running send, a finished one answers
again without sending again, a failure reaches the ask that sees it end, and
any other operation on the instance stops a running send first."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ferry.bus.memory import MemoryBus
from ferry.compute.manager import ComputeManager
from ferry.compute.sending import DiskSends, SendInterrupted
from ferry.compute.virt.fake import FakeDriver
from ferry.image.cache import ImageCache


class Gate:
    """A send that runs until released, counting how often it was started."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def send(self) -> dict[str, Any]:
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return {"state": "done", "bytes_sent": 42}


async def test_asks_join_one_send_and_a_finished_one_answers_again() -> None:
    sends, gate = DiskSends(), Gate()
    assert await sends.join("mig", "tok", "vm", gate.send, wait=0.01) is None
    assert await sends.join("mig", "tok", "vm", gate.send, wait=0.01) is None
    assert gate.started == 1 and sends.running("mig")
    gate.release.set()
    done = {"state": "done", "bytes_sent": 42}
    assert await sends.join("mig", "tok", "vm", gate.send, wait=1) == done
    # A late ask (a restarted conductor) gets the same answer, nothing is sent again.
    assert await sends.join("mig", "tok", "vm", gate.send, wait=1) == done
    assert gate.started == 1 and not sends.running("mig")


async def test_an_ask_that_goes_away_leaves_the_send_running() -> None:
    sends, gate = DiskSends(), Gate()
    ask = asyncio.create_task(sends.join("mig", "tok", "vm", gate.send, wait=None))
    await asyncio.sleep(0.01)
    ask.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ask
    assert sends.running("mig") and gate.cancelled == 0
    gate.release.set()
    assert (await sends.join("mig", "tok", "vm", gate.send, wait=1) or {})["bytes_sent"] == 42
    assert gate.started == 1


async def test_a_failure_reaches_the_ask_that_sees_it_end_then_a_new_ask_starts_over() -> None:
    sends, gate = DiskSends(), Gate()
    assert await sends.join("mig", "tok", "vm", gate.send, wait=0.01) is None
    gate.error = ConnectionResetError("cut")
    gate.release.set()
    with pytest.raises(ConnectionResetError, match="cut"):
        await sends.join("mig", "tok", "vm", gate.send, wait=1)
    gate.error = None
    assert (await sends.join("mig", "tok", "vm", gate.send, wait=1) or {})["bytes_sent"] == 42
    assert gate.started == 2


async def test_a_new_token_stops_the_old_send() -> None:
    sends, old, new = DiskSends(), Gate(), Gate()
    assert await sends.join("mig", "tok-1", "vm", old.send, wait=0.01) is None
    assert await sends.join("mig", "tok-2", "vm", new.send, wait=0.01) is None
    assert old.cancelled == 1 and new.started == 1 and sends.running("mig")
    await sends.close()


async def test_an_ask_waiting_on_a_send_stopped_by_shutdown_hears_it_was_interrupted() -> None:
    """The agent stops: the ask in flight is told, so the conductor asks again
    (the next agent resumes) instead of taking it as the transfer's failure."""
    sends, gate = DiskSends(), Gate()
    ask = asyncio.create_task(sends.join("mig", "tok", "vm", gate.send, wait=None))
    await asyncio.sleep(0.01)
    await sends.close()
    with pytest.raises(SendInterrupted):
        await ask
    assert gate.cancelled == 1 and not sends.running("mig")


def _host(tmp: Path) -> ComputeManager:
    instances = tmp / "instances"
    return ComputeManager("host1", FakeDriver("host1", instances), MemoryBus(),
                          ImageCache(instances / "_base", "http://127.0.0.1:9/image"),
                          "127.0.0.1")


def _send_args(vm: str, *, shared: bool = False) -> dict[str, Any]:
    return {"uuid": vm, "migration_uuid": f"mig-{vm}", "address": "127.0.0.1:9",
            "token": "tok", "names": ["disk"], "shared": shared, "wait": 0.01,
            "fence": [1, 1]}


async def test_a_local_copy_being_stopped_is_waited_for(tmp_path: Path) -> None:
    """Shared storage copies in a thread, which cannot be interrupted: the step
    that stops it (a rollback restoring <uuid>_resize) runs after it ended."""
    mgr = _host(tmp_path)
    copying: list[str] = []

    def slow_copy(uuid: str) -> None:
        copying.append("start")
        time.sleep(0.3)
        copying.append("end")

    mgr.store.copy_local = slow_copy  # type: ignore[method-assign]
    handle = mgr._dispatch()
    assert await handle("send_disks", _send_args("vm-a", shared=True)) == {"state": "running"}
    await handle("delete_instance", {"uuid": "vm-a"})
    assert copying == ["start", "end"] and not mgr.sends.running("mig-vm-a")


async def test_any_other_operation_on_the_instance_stops_its_send(tmp_path: Path) -> None:
    """Through the host's dispatcher, as the bus delivers: send_disks answers
    "running" within its wait; a later step for the same instance (here a
    delete) stops the send before it runs; other instances' sends go on."""
    mgr = _host(tmp_path)
    gates = {"vm-a": Gate(), "vm-b": Gate()}

    async def fake_send(uuid: str, *_: Any) -> dict[str, Any]:
        return await gates[uuid].send()

    mgr._send = fake_send  # type: ignore[method-assign]
    handle = mgr._dispatch()
    for vm in gates:
        assert await handle("send_disks", _send_args(vm)) == {"state": "running"}
    assert await handle("power_state", {"uuid": "vm-a"}) is not None  # reads stop nothing
    assert mgr.sends.running("mig-vm-a")
    await handle("delete_instance", {"uuid": "vm-a"})
    assert gates["vm-a"].cancelled == 1 and not mgr.sends.running("mig-vm-a")
    assert mgr.sends.running("mig-vm-b") and gates["vm-b"].cancelled == 0
    await mgr.sends.close()
