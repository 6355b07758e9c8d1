"""Several conductors: each migration is driven by one at a time (a lease), and
when a conductor dies another takes its migrations over once the lease runs out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ferry.bus.catalogue import compute_topic
from ferry.bus.memory import MemoryBus
from ferry.conductor.manager import ConductorEndpoint
from tests.support import invariants
from tests.support.cloud import Cloud, start_cloud


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Cloud, ConductorEndpoint]]:
    # Leases short enough for a quick takeover test, long enough that a busy
    # 2-core machine never lets a live conductor's lease lapse.
    ec = await start_cloud(tmp_path / "s", hosts=3, conductor_lease_seconds=4.0,
                           lease_renew_interval=0.3)
    ec.conductor.name = "conductor-a"
    ec.conductor.leases.owner = "conductor-a"
    b = ConductorEndpoint.create(ec.sessions, ec.bus, ec.cfg.settings, name="conductor-b")
    await b.start()
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
            yield Cloud(ec, client), b
    finally:
        await b.stop()
        await ec.stop()


async def test_six_migrations_at_once_with_two_conductors(
        two: tuple[Cloud, ConductorEndpoint]) -> None:
    cloud, _ = two
    image = await cloud.upload_image()
    servers = [await cloud.boot(name=f"vm{i}", image=image) for i in range(6)]
    results = await asyncio.gather(*[cloud.action(s["id"], {"migrate": None})
                                     for s in servers])
    assert all(r.status_code == 202 for r in results)
    for s in servers:
        await cloud.wait_status(s["id"], "VERIFY_RESIZE")
    for s in servers:
        await invariants.check(cloud.cloud, s["id"])
    await invariants.total_usage_matches(cloud.cloud)
    await asyncio.gather(*[cloud.action(s["id"], {"confirmResize": None}) for s in servers])
    for s in servers:
        await cloud.wait_status(s["id"], "ACTIVE")
        await invariants.check(cloud.cloud, s["id"])
    await invariants.total_usage_matches(cloud.cloud)


async def test_dead_conductor_migrations_are_taken_over(
        two: tuple[Cloud, ConductorEndpoint]) -> None:
    cloud, b = two
    ec = cloud.cloud
    a = ec.conductor
    await b.stop()  # only A serves, so A takes the migration
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    bus = ec.bus
    assert isinstance(bus, MemoryBus)
    gate = bus.hold(compute_topic(src), "power_off_for_migration")
    await cloud.action(sid, {"migrate": None})
    await asyncio.wait_for(gate.reached.wait(), 10)
    [mig] = await cloud.migrations(sid)
    assert mig["state"] == "powering_off"

    await a.stop(release=False)  # A dies holding the lease
    b2 = ConductorEndpoint.create(ec.sessions, bus, ec.cfg.settings, name="conductor-b")
    ec.conductor = b2
    await b2.start()
    # B must not touch it while A's lease is valid...
    [mig] = await cloud.migrations(sid)
    assert mig["state"] == "powering_off"
    # ...and takes it over once the lease expired (4 s), rolling it back.
    s = await cloud.wait_status(sid, "ACTIVE", timeout=15)
    gate.released.set()  # A's late power-off arrives and is refused (fenced)
    await asyncio.sleep(0.2)
    await b2.wait_idle()
    assert s["OS-EXT-SRV-ATTR:host"] == src
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error" and "interrupted" in mig["error"]
    await invariants.check(ec, sid)
    await invariants.total_usage_matches(ec)
