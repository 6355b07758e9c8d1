"""The scheduler's set-based reads and the heartbeat's one-UPDATE path on
PostgreSQL: the same statements as on SQLite must give the same answers
(SUM returns a bigint there, floats are compared for the inventory match)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.bus.memory import MemoryBus
from ferry.conductor.manager import ConductorEndpoint
from ferry.conf import Settings
from ferry.db.models import ResourceProvider, Service
from ferry.db.session import make_engine, make_sessionmaker
from ferry.scheduler import placement
from ferry.scheduler.scheduler import host_states
from tests.support.postgres import create_database, drop_database
from tests.unit.test_heartbeat import statements

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Sessions]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_usage_sums_and_heartbeats_on_postgres(pg: Sessions) -> None:
    cond = ConductorEndpoint.create(pg, MemoryBus(), Settings(), name="c-pg")
    tag = uuid.uuid4().hex[:6]
    busy, idle = f"busy-{tag}", f"idle-{tag}"
    for host in (busy, idle):
        await cond.report_state(host=host, zone="nova", vcpus=8, memory_mb=8192, disk_gb=100,
                                hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    for i in range(3):
        async with pg() as s, s.begin():
            await placement.claim(s, f"vm{i}-{tag}", busy,
                                  {"VCPU": i + 1, "MEMORY_MB": 1024, "DISK_GB": 10})
    async with pg() as s:
        used = await placement.usages(s)
        states = {h.host: h for h in await host_states(s, down_after=60)}
        rp_id = (await s.execute(select(ResourceProvider.id)
                                 .where(ResourceProvider.name == busy))).scalar_one()
        one = await placement.provider_usage(s, rp_id)
    assert used[busy] == one == {"VCPU": 6, "MEMORY_MB": 3072, "DISK_GB": 30}
    assert all(type(v) is int for v in one.values())
    assert idle not in used
    assert states[busy].free("MEMORY_MB") == 8192 - 512 - 3072
    assert states[idle].used == {} and states[idle].up and states[idle].enabled

    # An unchanged heartbeat matches the stored inventory (ratio 4.0 as a double).
    with statements(pg) as sql:
        await cond.report_state(host=idle, zone="nova", vcpus=8, memory_mb=8192,
                                disk_gb=100, hypervisor_type="fake", hypervisor_version=1,
                                data_address="127.0.0.1:1")
    assert [q for q in sql if q not in ("BEGIN", "COMMIT")] == ["UPDATE"]
    async with pg() as s:
        assert (await s.execute(select(Service.last_seen_up)
                                .where(Service.host == idle))).scalar_one() is not None
