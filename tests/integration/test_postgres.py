"""The compare-and-swap paths on PostgreSQL, where transactions really run in
parallel (SQLite serialises them): placement claims and state transitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.conductor.states import Event, State
from ferry.conductor.transitions import ConcurrentUpdate, advance
from ferry.db.models import Flavor, Instance, Migration
from ferry.db.session import make_engine, make_sessionmaker
from ferry.scheduler import placement
from ferry.scheduler.placement import InventoryRecord
from tests.support.postgres import create_database, drop_database

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


async def test_concurrent_claims_never_overcommit_on_postgres(pg: Sessions) -> None:
    host = f"h-{uuid.uuid4().hex[:6]}"
    async with pg() as s, s.begin():
        await placement.ensure_provider(s, host, {
            "VCPU": InventoryRecord(5, 0, 1.0), "MEMORY_MB": InventoryRecord(5 * 512),
            "DISK_GB": InventoryRecord(50)})

    async def one() -> bool:
        try:
            async with pg() as s, s.begin():
                await placement.claim(s, str(uuid.uuid4()), host,
                                      {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10})
            return True
        except placement.ClaimFailed:
            return False

    results = await asyncio.gather(*[one() for _ in range(20)])
    assert sum(results) == 5
    async with pg() as s:
        assert (await placement.usages(s))[host] == {"VCPU": 5, "MEMORY_MB": 2560,
                                                     "DISK_GB": 50}


async def test_concurrent_advance_has_one_winner_on_postgres(pg: Sessions) -> None:
    inst_uuid, mig_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    async with pg() as s, s.begin():
        f = Flavor(flavorid=uuid.uuid4().hex[:8], name=uuid.uuid4().hex, vcpus=1,
                   memory_mb=128, root_gb=1, extra_specs={})
        s.add(f)
        await s.flush()
        s.add(Instance(uuid=inst_uuid, display_name="vm", project_id="p", user_id="u",
                       vm_state="resized", task_state=None, flavor_id=f.id, image_ref="i"))
        s.add(Migration(uuid=mig_uuid, instance_uuid=inst_uuid, state=State.VERIFY.value,
                        status="finished", phase="verify", old_vm_state="active", steps=[]))

    async def decide(event: Event) -> str:
        try:
            await advance(pg, mig_uuid, event, expect=State.VERIFY)
            return event.value
        except ConcurrentUpdate:
            return "lost"

    results = await asyncio.gather(*[decide(e) for e in [Event.CONFIRM, Event.REVERT] * 4])
    winners = [r for r in results if r != "lost"]
    assert len(winners) == 1, results
    async with pg() as s:
        mig = await s.get(Migration, (await s.execute(
            Migration.__table__.select().where(Migration.uuid == mig_uuid))).one().id)
        assert mig is not None and len(mig.steps) == 1
