"""Decision time alone: `python -m bench.scale.synthetic [--decisions 100]`.

Writes 1,000 compute hosts, 10,000 consumers and 30,000 allocations straight
into a throw-away PostgreSQL database (no API, conductor or simulated hosts
in the process) and times `select_destinations` (each claim committed, then
given back, so the next decision finds one provider changed),
so two versions of the scheduler can be compared back to back in a minute
(point PYTHONPATH at the other checkout). The full picture is `bench.scale`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.scale.decisions import decide, summary
from ferry.db.models import Allocation, Consumer, Inventory, ResourceProvider, Service, utcnow
from ferry.db.session import make_engine, make_sessionmaker
from ferry.scheduler.hostcache import HostStateCache
from ferry.scheduler.hoststate import RequestSpec
from tests.support.postgres import create_database, drop_database

HOST = (("VCPU", 32, 4.0), ("MEMORY_MB", 131072, 1.0), ("DISK_GB", 1000, 1.0))
SERVER = (("VCPU", 2), ("MEMORY_MB", 4096), ("DISK_GB", 20))


async def load(sessions: async_sessionmaker[AsyncSession], hosts: int, servers: int) -> None:
    rng = random.Random(1)
    now = utcnow()
    async with sessions() as s, s.begin():
        await s.execute(insert(Service), [
            dict(uuid=f"s{i}", host=f"h{i}", binary="ferry-compute", topic="compute",
                 zone="nova", disabled=i % 100 == 1, forced_down=False, last_seen_up=now,
                 data_address="127.0.0.1:1", hypervisor_type="fake", hypervisor_version=1)
            for i in range(hosts)])
        await s.execute(insert(ResourceProvider), [
            dict(id=i + 1, uuid=f"r{i}", name=f"h{i}", generation=0) for i in range(hosts)])
        await s.execute(insert(Inventory), [
            dict(provider_id=i + 1, resource_class=rc, total=total, reserved=0,
                 allocation_ratio=ratio)
            for i in range(hosts) for rc, total, ratio in HOST])
        await s.execute(insert(Consumer), [
            dict(uuid=f"c{j}", generation=0, project_id="p", user_id="u")
            for j in range(servers)])
        await s.execute(insert(Allocation), [
            dict(provider_id=rng.randrange(hosts) + 1, consumer_id=f"c{j}",
                 resource_class=rc, used=used)
            for j in range(servers) for rc, used in SERVER])


async def main(url: str, args: argparse.Namespace) -> dict[str, float]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        await load(sessions, args.hosts, args.servers)
        cache = None if args.no_cache else HostStateCache()
        took = []
        for k in range(args.decisions):
            spec = RequestSpec(f"new{k}", "p", "u", dict(SERVER))
            _host, seconds = await decide(sessions, spec, 60, cache)
            took.append(seconds)
        return summary(took)
    finally:
        await engine.dispose()


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale.synthetic", description=__doc__)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--servers", type=int, default=10000)
    p.add_argument("--decisions", type=int, default=100)
    p.add_argument("--no-cache", action="store_true",
                   help="read every host's usage on every decision (no host-state cache)")
    args = p.parse_args(argv)
    url = create_database()
    try:
        stats = asyncio.run(main(url, args))
    finally:
        drop_database(url)
    print(" ".join(f"{k} {v:.1f}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
