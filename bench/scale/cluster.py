"""The simulated cluster: database, bus, API, conductor, compute hosts, servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import secrets
import shutil
import time
import uuid as uuidlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ferry.api.app import create_app
from ferry.api.context import ApiDeps
from ferry.bus.memory import MemoryBus
from ferry.compute.instance_store import base_name
from ferry.compute.manager import ComputeManager, spec_from
from ferry.compute.virt.fake import FakeDriver
from ferry.conductor import records
from ferry.conductor.manager import ConductorEndpoint
from ferry.conf import Settings
from ferry.db.models import (
    Allocation,
    Consumer,
    Flavor,
    Image,
    Instance,
    ResourceProvider,
    Service,
    utcnow,
)
from ferry.db.session import make_engine, make_sessionmaker
from ferry.image.cache import ImageCache
from ferry.scheduler import placement
from ferry.scheduler.filters import filter_hosts
from ferry.scheduler.hoststate import HostState, RequestSpec
from ferry.scheduler.scheduler import host_states, select_destinations
from ferry.scheduler.weighers import weigh
from ferry.transfer import TokenRegistry, TransferServer

log = logging.getLogger("bench.scale")

PG = os.environ.get("FERRY_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

# (flavorid, name, vcpus, ram MiB, root GiB, share of the servers). Root disks stay
# small enough for the destination pre-flight's free-space check on this machine.
FLAVORS = (
    ("b1", "bench.small", 1, 2048, 10, 0.40),
    ("b2", "bench.medium", 2, 4096, 20, 0.30),
    ("b3", "bench.large", 4, 8192, 40, 0.20),
    ("b4", "bench.xlarge", 8, 16384, 40, 0.10),
)
# (vcpus, memory MiB, disk GiB, share of the hosts)
HOST_SIZES = ((32, 131072, 1000, 0.7), (48, 262144, 2000, 0.3))


# -- a throw-away PostgreSQL database -------------------------------------------------


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres", timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database() -> str:
    name = f"ferry_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = f"{PG}/{name}"
    from ferry.db.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    return url


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the cluster ------------------------------------------------------------------------


class SharedTransfer:
    """Stands in for each ComputeManager's TransferServer: one real TransferServer
    and TokenRegistry receive for all simulated hosts. A grant names the receiving
    host's own instance directory, so what is written where is unchanged; only the
    listening socket is shared. Sending is each host's real `send_files`."""

    def __init__(self) -> None:
        self.registry = TokenRegistry()
        self.server = TransferServer("127.0.0.1", 0, self.registry, max_connections=4096)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.server.start()

    async def stop(self) -> None:
        return None  # a host stopping does not stop the others' endpoint

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address


@dataclass
class SimCluster:
    root: Path
    hosts: int
    servers: int
    real_fill: int
    seed: int = 1
    report_interval: float = 10.0
    settings: Settings = field(default_factory=Settings)
    db_url: str = ""
    bus: MemoryBus = field(default_factory=MemoryBus)
    engines: list[AsyncEngine] = field(default_factory=list)
    sessions: async_sessionmaker[AsyncSession] | None = None
    api_sessions: async_sessionmaker[AsyncSession] | None = None
    # The benchmark's own reads (progress, drift): never from the services' pools.
    observer: async_sessionmaker[AsyncSession] | None = None
    n_conductors: int = 1
    conductors: list[ConductorEndpoint] = field(default_factory=list)
    shared: SharedTransfer = field(default_factory=lambda: SharedTransfer())
    computes: dict[str, ComputeManager] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    disabled: set[str] = field(default_factory=set)
    flavors: dict[str, Flavor] = field(default_factory=dict)  # flavorid -> row
    image_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    fill_decisions: list[tuple[int, float]] = field(default_factory=list)  # (n placed, s)
    api: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._keepalive: asyncio.Task[None] | None = None
        # Services must stay "up" through a long run: heartbeats keep them fresh;
        # the down window is Nova's default.
        self.settings.report_interval = self.report_interval

    @property
    def host_names(self) -> list[str]:
        return [f"cmp{i:04d}" for i in range(self.hosts)]

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.perf_counter()
        self.db_url = await create_database()
        self.timings["create database + alembic upgrade"] = time.perf_counter() - t0
        # Separate engines, as the API and the conductor are separate processes.
        cond_engine, api_engine = make_engine(self.db_url), make_engine(self.db_url)
        obs_engine = make_engine(self.db_url, pooled=False)
        self.engines = [cond_engine, api_engine, obs_engine]
        self.sessions = make_sessionmaker(cond_engine)
        self.api_sessions = make_sessionmaker(api_engine)
        self.observer = make_sessionmaker(obs_engine)
        for i in range(self.n_conductors):
            # Each conductor is its own process in a deployment: its own pool.
            engine = cond_engine if i == 0 else make_engine(self.db_url)
            if i:
                self.engines.append(engine)
            cond = ConductorEndpoint.create(
                make_sessionmaker(engine), self.bus, self.settings, name=f"bench-conductor{i + 1}"
            )
            await cond.start()
            self.conductors.append(cond)
        app = create_app(
            ApiDeps(
                self.api_sessions,
                self.bus,
                self.settings,
                self.root / "images",
                insecure_no_auth=True,
            )
        )
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            timeout=600,
            headers={"OpenStack-API-Version": "compute 2.80"},
        )
        await self._seed_catalogue()
        t0 = time.perf_counter()
        await self._start_computes()
        self.timings[f"start {self.hosts} computes (register via report_state)"] = (
            time.perf_counter() - t0
        )

    async def stop(self) -> None:
        for cond in self.conductors:
            await cond.stop()
        for mgr in self.computes.values():
            if mgr.host not in self.down:
                await mgr.stop()
        await self.shared.server.stop()
        if self.api is not None:
            await self.api.aclose()
        await self.bus.close()
        for e in self.engines:
            await e.dispose()
        if self.db_url:
            await drop_database(self.db_url)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- catalogue ----------------------------------------------------------------------

    async def _seed_catalogue(self) -> None:
        assert self.sessions is not None
        data = b"\1" * 4096
        async with self.sessions() as s, s.begin():
            for fid, name, vcpus, ram, disk, _ in FLAVORS:
                f = Flavor(
                    flavorid=fid,
                    name=name,
                    vcpus=vcpus,
                    memory_mb=ram,
                    root_gb=disk,
                    extra_specs={},
                )
                s.add(f)
                self.flavors[fid] = f
            self.image_id = str(uuidlib.uuid4())
            s.add(
                Image(
                    id=self.image_id,
                    name="bench-base",
                    status="active",
                    disk_format="raw",
                    container_format="bare",
                    size=len(data),
                    visibility="public",
                )
            )
        # Every host has the base in its cache already (no image service in the run).
        base = self.root / "base-image"
        self.root.mkdir(parents=True, exist_ok=True)
        base.write_bytes(data)

    # -- compute hosts --------------------------------------------------------------------

    async def _start_computes(self) -> None:
        sizes = [h for h in HOST_SIZES for _ in range(int(h[3] * 1000))]
        base = self.root / "base-image"
        sem = asyncio.Semaphore(25)
        # One data-plane endpoint receives for every simulated host (grants name each
        # host's own instance directory), so the process keeps a few hundred file
        # descriptors instead of 1,000 listeners: see SharedTransfer.
        await self.shared.start()

        async def one(name: str) -> None:
            vcpus, mem, disk, _ = self.rng.choice(sizes)
            path = self.root / "hosts" / name
            (path / "_base").mkdir(parents=True, exist_ok=True)
            os.link(base, path / "_base" / base_name(self.image_id))
            driver = FakeDriver(name, path, vcpus=vcpus, memory_mb=mem, disk_gb=disk)
            mgr = ComputeManager(
                name,
                driver,
                self.bus,
                ImageCache(path / "_base", "http://image.invalid"),
                "127.0.0.1",
                0,
                report_interval=self.report_interval,
            )
            mgr.tokens = self.shared.registry
            mgr.transfer = self.shared  # type: ignore[assignment]
            self.computes[name] = mgr
            async with sem:
                await mgr.start()  # data plane up, report_state cast, serving, heartbeats

        await asyncio.gather(*(one(n) for n in self.host_names))
        await self.wait_registered()
        # 1 % of the hosts die (no more heartbeats, last seen long ago), 1 % are disabled.
        names = list(self.host_names)
        self.rng.shuffle(names)
        k = max(1, self.hosts // 100)
        self.down, self.disabled = set(names[:k]), set(names[k : 2 * k])
        for name in self.down:
            await self.computes[name].stop()
        assert self.sessions is not None
        async with self.sessions() as s, s.begin():
            await s.execute(
                update(Service)
                .where(Service.host.in_(self.down))
                .values(last_seen_up=utcnow() - dt.timedelta(hours=1))
            )
            await s.execute(
                update(Service)
                .where(Service.host.in_(self.disabled))
                .values(disabled=True, disabled_reason="bench")
            )

    async def wait_registered(self, timeout: float = 600) -> None:
        assert self.sessions is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.sessions() as s:
                n = len((await s.execute(select(ResourceProvider.id))).all())
            if n >= self.hosts:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"only {n} of {self.hosts} hosts registered")

    # -- servers --------------------------------------------------------------------------

    def _pick_flavor(self) -> Flavor:
        r, acc = self.rng.random(), 0.0
        for fid, *_rest, share in FLAVORS:
            acc += share
            if r <= acc:
                return self.flavors[fid]
        return self.flavors[FLAVORS[-1][0]]

    def _new_instance(self, flavor: Flavor, host: str, n: int) -> dict[str, object]:
        now = utcnow()
        return {
            "uuid": str(uuidlib.uuid4()),
            "display_name": f"vm{n:05d}",
            "project_id": f"project-{n % 50:02d}",
            "user_id": f"user-{n % 200:03d}",
            "host": host,
            "node": host,
            "vm_state": "active",
            "task_state": None,
            "power_state": 1,
            "flavor_id": flavor.id,
            "image_ref": self.image_id,
            "launched_at": now,
            "created_at": now,
            "metadata_": {},
            "progress": 0,
            "deleted": False,
            "locked": False,
        }

    async def fill(self) -> None:
        """10,000 servers: the first `real_fill` through select_destinations, the
        rest by the same filters and weighers over in-memory host states."""
        assert self.sessions is not None
        t0 = time.perf_counter()
        for n in range(min(self.real_fill, self.servers)):
            flavor = self._pick_flavor()
            row = self._new_instance(flavor, "", n)
            spec = RequestSpec(
                str(row["uuid"]),
                str(row["project_id"]),
                str(row["user_id"]),
                records.flavor_resources(flavor),
            )
            async with self.sessions() as s, s.begin():
                t = time.perf_counter()
                sel = await select_destinations(
                    s, spec, down_after=self.settings.service_down_time, max_attempts=1
                )
                self.fill_decisions.append((n, time.perf_counter() - t))
                row["host"] = row["node"] = sel.host
                s.add(Instance(**row))
        self.timings[
            f"place {min(self.real_fill, self.servers)} servers via select_destinations"
        ] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await self._bulk_fill(self.servers - self.real_fill)
        self.timings[
            f"place {max(0, self.servers - self.real_fill)} servers in bulk (same filters/weighers)"
        ] = time.perf_counter() - t0

    async def _bulk_fill(self, count: int, batch: int = 1000) -> None:
        if count <= 0:
            return
        assert self.sessions is not None
        async with self.sessions() as s:
            states = {h.host: h for h in await host_states(s, self.settings.service_down_time)}
            rp_ids = dict(
                (await s.execute(select(ResourceProvider.name, ResourceProvider.id))).all()
            )
        start = self.real_fill
        rows: list[dict[str, object]] = []
        consumers: list[dict[str, object]] = []
        allocs: list[dict[str, object]] = []
        claims: dict[str, int] = defaultdict(int)

        async def flush() -> None:
            assert self.sessions is not None
            async with self.sessions() as s, s.begin():
                await s.execute(insert(Instance), rows)
                await s.execute(insert(Consumer), consumers)
                await s.execute(insert(Allocation), allocs)
                for host, k in claims.items():  # one generation bump per claim
                    await s.execute(
                        update(ResourceProvider)
                        .where(ResourceProvider.name == host)
                        .values(generation=ResourceProvider.generation + k)
                    )
            rows.clear()
            consumers.clear()
            allocs.clear()
            claims.clear()

        hosts = list(states.values())
        for n in range(start, start + count):
            flavor = self._pick_flavor()
            res = records.flavor_resources(flavor)
            row = self._new_instance(flavor, "", n)
            spec = RequestSpec(str(row["uuid"]), str(row["project_id"]), str(row["user_id"]), res)
            passed, _ = filter_hosts(hosts, spec)
            if not passed:
                raise RuntimeError(f"the cluster is full after {n} servers")
            best: HostState = weigh(passed)[0]
            for rc, amount in res.items():
                best.used[rc] = best.used.get(rc, 0) + amount
            row["host"] = row["node"] = best.host
            rows.append(row)
            consumers.append(
                {
                    "uuid": row["uuid"],
                    "project_id": row["project_id"],
                    "user_id": row["user_id"],
                    "generation": 0,
                }
            )
            allocs.extend(
                {
                    "provider_id": rp_ids[best.host],
                    "consumer_id": row["uuid"],
                    "resource_class": rc,
                    "used": amount,
                }
                for rc, amount in res.items()
                if amount > 0
            )
            claims[best.host] += 1
            if len(rows) >= batch:
                await flush()
                await asyncio.sleep(0)  # let heartbeats run
        if rows:
            await flush()

    async def give_disks(self, uuids: list[str]) -> None:
        """A real sparse disk (fake driver) on the host of each server that will move."""
        assert self.sessions is not None
        async with self.sessions() as s:
            insts = (
                (await s.execute(select(Instance).where(Instance.uuid.in_(uuids)))).scalars().all()
            )
            flavors = {f.id: f for f in (await s.execute(select(Flavor))).scalars()}
            image = await s.get(Image, self.image_id)
        payload_image = records.image_payload(image, self.image_id)
        for inst in insts:
            assert inst.host is not None
            mgr = self.computes[inst.host]
            await mgr.driver.spawn(
                spec_from(records.instance_payload(inst, flavors[inst.flavor_id]), payload_image)
            )

    async def movable(self, count: int) -> list[str]:
        """`count` random servers on hosts that are up and enabled."""
        assert self.sessions is not None
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Instance.uuid, Instance.host)
                    .where(Instance.deleted.is_(False))
                    .order_by(Instance.id)
                )
            ).all()
        ok = [u for u, h in rows if h not in self.down and h not in self.disabled]
        return self.rng.sample(ok, min(count, len(ok)))

    def pause_heartbeats(self) -> None:
        """Stop the hosts' heartbeats (to time a decision alone); the hosts that were
        up are kept up by one bulk UPDATE every few seconds instead."""
        for mgr in self.computes.values():
            if mgr._heartbeat is not None:
                mgr._heartbeat.cancel()
                mgr._heartbeat = None
        self._keepalive = asyncio.create_task(self._keep_up())

    async def _keep_up(self) -> None:
        assert self.observer is not None
        while True:
            async with self.observer() as s, s.begin():
                await s.execute(
                    update(Service)
                    .where(Service.host.not_in(self.down))
                    .values(last_seen_up=utcnow())
                )
            await asyncio.sleep(min(5.0, self.settings.service_down_time / 4))

    def resume_heartbeats(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        # Each host resumes after its own random part of one period: restarted all at
        # once they would stay in step and arrive as one burst of 1,000 every period
        # (real hosts start at different times; so did these, in start()).
        for name, mgr in self.computes.items():
            if name not in self.down and mgr._heartbeat is None:
                delay = self.rng.uniform(0, self.report_interval)
                mgr._heartbeat = asyncio.create_task(self._heartbeat_after(mgr, delay))

    @staticmethod
    async def _heartbeat_after(mgr: ComputeManager, delay: float) -> None:
        await asyncio.sleep(delay)
        await mgr._heartbeat_loop()

    async def hosts_down(self) -> list[str]:
        """Hosts the scheduler would consider down now, other than the ones we stopped."""
        from ferry.scheduler.hoststate import is_up

        assert self.observer is not None
        async with self.observer() as s:
            rows = (
                await s.execute(select(Service.host, Service.last_seen_up, Service.forced_down))
            ).all()
        now = utcnow()
        return sorted(
            h
            for h, seen, forced in rows
            if h not in self.down and not is_up(seen, forced, now, self.settings.service_down_time)
        )

    async def usage_check(self) -> dict[str, object]:
        """Allocation drift: per provider and class, what placement holds against what
        the servers and their unconfirmed migrations should hold."""
        assert self.observer is not None
        from ferry.db.models import Migration

        async with self.observer() as s:
            actual = await placement.usages(s)
            flavors = {
                f.id: records.flavor_resources(f)
                for f in (await s.execute(select(Flavor))).scalars()
            }
            insts = (
                await s.execute(
                    select(Instance.uuid, Instance.host, Instance.flavor_id).where(
                        Instance.deleted.is_(False)
                    )
                )
            ).all()
            migs = (
                (
                    await s.execute(
                        select(Migration).where(
                            Migration.state.not_in(("confirmed", "reverted", "error"))
                        )
                    )
                )
                .scalars()
                .all()
            )
            consumers = {c for (c,) in (await s.execute(select(Consumer.uuid))).all()}
        expected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for _uuid, host, fid in insts:
            for rc, amount in flavors[fid].items():
                if amount > 0:
                    expected[host][rc] += amount
        unsettled = 0
        for m in migs:
            if m.state != "verify":
                unsettled += 1
                continue
            for rc, amount in flavors[m.old_instance_type_id].items():
                if amount > 0:
                    expected[m.source_compute][rc] += amount
        drift = {}
        for host in set(actual) | set(expected):
            for rc in set(actual.get(host, {})) | set(expected.get(host, {})):
                a, e = actual.get(host, {}).get(rc, 0), expected.get(host, {}).get(rc, 0)
                if a != e:
                    drift[f"{host}/{rc}"] = a - e
        live = {u for u, _h, _f in insts} | {m.uuid for m in migs if m.state == "verify"}
        return {
            "providers": len(actual),
            "drift": drift,
            "unsettled_migrations": unsettled,
            "orphan_consumers": len(consumers - live),
            "missing_consumers": len(live - consumers),
        }
