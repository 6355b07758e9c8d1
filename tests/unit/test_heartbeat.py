"""The compute heartbeat (`ConductorEndpoint.report_state`): it registers a host,
keeps its inventory current, and when nothing but the time changed it costs one
UPDATE (1,000 hosts send ~100 of these a second while the scheduler decides)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.bus.memory import MemoryBus
from ferry.conductor.manager import ConductorEndpoint
from ferry.conf import Settings
from ferry.db.models import ResourceProvider, Service
from ferry.scheduler import placement
from ferry.scheduler.placement import InventoryRecord

Sessions = async_sessionmaker[AsyncSession]

BEAT: dict[str, Any] = dict(host="c1", zone="az1", vcpus=8, memory_mb=16384, disk_gb=200,
                            hypervisor_type="fake", hypervisor_version=1,
                            data_address="10.0.0.1:7000")


@contextmanager
def statements(sessions: Sessions) -> Iterator[list[str]]:
    """The SQL statements the database receives meanwhile (first word of each)."""
    seen: list[str] = []
    engine = sessions.kw["bind"].sync_engine

    def record(_conn: Any, _cur: Any, sql: str, *_: Any) -> None:
        seen.append(sql.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _service(sessions: Sessions) -> Service:
    async with sessions() as s:
        return (await s.execute(select(Service).where(Service.host == "c1"))).scalar_one()


async def _generation(sessions: Sessions) -> int:
    async with sessions() as s:
        return (await s.execute(select(ResourceProvider.generation)
                                .where(ResourceProvider.name == "c1"))).scalar_one()


def _conductor(sessions: Sessions) -> ConductorEndpoint:
    return ConductorEndpoint.create(sessions, MemoryBus(), Settings(), name="c-test")


async def test_first_heartbeat_registers_host_and_inventory(sessions: Sessions) -> None:
    await _conductor(sessions).report_state(**BEAT)
    svc = await _service(sessions)
    assert (svc.zone, svc.data_address, svc.hypervisor_type, svc.disabled) == (
        "az1", "10.0.0.1:7000", "fake", False)
    assert svc.last_seen_up is not None
    async with sessions() as s:
        assert await placement.inventories(s) == {"c1": {
            "VCPU": InventoryRecord(8, 0, 4.0), "MEMORY_MB": InventoryRecord(16384, 512, 1.0),
            "DISK_GB": InventoryRecord(200, 0, 1.0)}}


async def test_unchanged_heartbeat_is_one_update(sessions: Sessions) -> None:
    cond = _conductor(sessions)
    await cond.report_state(**BEAT)
    before, generation = await _service(sessions), await _generation(sessions)
    with statements(sessions) as sql:
        await cond.report_state(**BEAT)
    assert [s for s in sql if s not in ("BEGIN", "COMMIT")] == ["UPDATE"]
    after = await _service(sessions)
    assert after.last_seen_up is not None and before.last_seen_up is not None
    assert after.last_seen_up > before.last_seen_up
    assert await _generation(sessions) == generation  # no inventory change: no CAS bump


async def test_changed_inventory_or_address_is_written(sessions: Sessions) -> None:
    cond = _conductor(sessions)
    await cond.report_state(**BEAT)
    generation = await _generation(sessions)
    await cond.report_state(**{**BEAT, "memory_mb": 32768})
    assert await _generation(sessions) == generation + 1
    async with sessions() as s:
        assert (await placement.inventories(s))["c1"]["MEMORY_MB"] == InventoryRecord(
            32768, 512, 1.0)
    await cond.report_state(**{**BEAT, "memory_mb": 32768, "data_address": "10.0.0.2:7000",
                               "hypervisor_version": 2})
    svc = await _service(sessions)
    assert (svc.data_address, svc.hypervisor_version) == ("10.0.0.2:7000", 2)
    assert await _generation(sessions) == generation + 1


async def test_heartbeat_leaves_admin_state_alone(sessions: Sessions) -> None:
    """Disabling or forcing down a host is the operator's; a heartbeat (fast path
    or not) only records that the host is alive."""
    cond = _conductor(sessions)
    await cond.report_state(**BEAT)
    async with sessions() as s, s.begin():
        svc = (await s.execute(select(Service).where(Service.host == "c1"))).scalar_one()
        svc.disabled, svc.forced_down, svc.disabled_reason = True, True, "maintenance"
    await cond.report_state(**BEAT)
    await cond.report_state(**{**BEAT, "disk_gb": 300})
    svc = await _service(sessions)
    assert (svc.disabled, svc.forced_down, svc.disabled_reason) == (True, True, "maintenance")
