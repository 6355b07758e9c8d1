"""The embedded default: API, conductor, scheduler and N compute hosts in one process.

`ferry up` runs it; the functional tests and the demo drive it directly.
State lives under one directory (SQLite file, image store, one directory per
host), so starting again on the same directory carries on where it stopped.

Authentication is on by default: the first start creates the admin user and
project (ferry.identity.bootstrap) and every start refreshes
`<state-dir>/clouds.yaml`. `insecure_no_auth` (loopback only) is Nova's
noauth2. The compute hosts read base images with a per-process service token
that the API accepts for image reads only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from sqlalchemy import select

from ferry.api.app import create_app
from ferry.api.context import ApiDeps
from ferry.bus.memory import MemoryBus
from ferry.cmd.config import is_loopback
from ferry.compute.manager import ComputeManager
from ferry.compute.virt.loader import load_driver
from ferry.conductor.manager import ConductorEndpoint
from ferry.conf import Settings
from ferry.db.migrate import upgrade
from ferry.db.models import Flavor, Service, utcnow
from ferry.db.session import make_engine, make_sessionmaker
from ferry.identity.bootstrap import Bootstrapped, bootstrap, write_clouds_yaml
from ferry.image.cache import ImageCache
from ferry.policy.enforcer import Policy

log = logging.getLogger(__name__)

DEFAULT_FLAVORS = (
    # flavorid, name, vcpus, ram MiB, disk GiB
    ("1", "ferry.tiny", 1, 128, 1),
    ("2", "ferry.small", 1, 256, 2),
    ("3", "ferry.medium", 2, 512, 4),
)


class InsecureBindRefused(Exception):
    pass


@dataclass
class CloudConfig:
    state_dir: Path
    hosts: int = 2
    driver: str = "libvirt"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8774
    insecure_no_auth: bool = False
    data_port: int = 0
    shared_storage: bool = False
    settings: Settings = field(default_factory=Settings)
    # Identity: the admin's password on first start (None: generate one),
    # token lifetime, and the policy override file (None: <state-dir>/policy.yaml).
    admin_password: str | None = None
    token_ttl: float = 3600.0
    policy_file: Path | None = None


def host_name(i: int) -> str:
    return f"host{i}"


def data_ip(i: int) -> str:
    return f"127.0.1.{i}"


class EmbeddedCloud:
    def __init__(self, cfg: CloudConfig) -> None:
        if cfg.insecure_no_auth and not is_loopback(cfg.listen_host):
            raise InsecureBindRefused(
                f"--insecure-no-auth treats every caller as admin; it only listens on "
                f"loopback, not on {cfg.listen_host}")
        self.cfg = cfg
        self.bus = MemoryBus()
        self.computes: list[ComputeManager] = []
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite+aiosqlite:///{cfg.state_dir / 'ferry.db'}"
        self.engine = make_engine(self.db_url)
        self.sessions = make_sessionmaker(self.engine)
        self.conductor = ConductorEndpoint.create(self.sessions, self.bus, cfg.settings)
        # Never stored: a new one each start, shared only with the in-process hosts.
        self.service_token = secrets.token_urlsafe(32)
        self.policy = Policy(cfg.policy_file or cfg.state_dir / "policy.yaml")
        self.bootstrapped: Bootstrapped | None = None
        self.deps = ApiDeps(self.sessions, self.bus, cfg.settings, cfg.state_dir / "images",
                            insecure_no_auth=cfg.insecure_no_auth, policy=self.policy,
                            service_token=self.service_token, token_ttl=cfg.token_ttl)
        self.app = create_app(self.deps)

    @property
    def url(self) -> str:
        return f"http://{self.cfg.listen_host}:{self.port}"

    @property
    def clouds_yaml(self) -> Path:
        return self.cfg.state_dir / "clouds.yaml"

    @property
    def client_url(self) -> str:
        """The URL a local client uses (a wildcard bind is reached on loopback)."""
        host = self.cfg.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server and self._server.servers:
            sock = self._server.servers[0].sockets[0]
            return int(sock.getsockname()[1])
        return self.cfg.listen_port

    def instances_path(self, i: int) -> Path:
        if self.cfg.shared_storage:
            return self.cfg.state_dir / "shared" / "instances"
        return self.cfg.state_dir / "hosts" / host_name(i) / "instances"

    async def start(self) -> None:
        await asyncio.to_thread(upgrade, self.db_url)
        await self._seed_flavors()
        if not self.cfg.insecure_no_auth:
            self.bootstrapped = await bootstrap(self.sessions, self.cfg.admin_password)
        await self.conductor.start()
        config = uvicorn.Config(self.app, host=self.cfg.listen_host, port=self.cfg.listen_port,
                                log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._server_task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._server_task.done():
                self._server_task.result()
                raise RuntimeError("the API server stopped during start-up")
            await asyncio.sleep(0.02)
        if self.bootstrapped is not None:
            write_clouds_yaml(self.clouds_yaml, self.client_url, self.bootstrapped.password)
        for i in range(1, self.cfg.hosts + 1):
            await self.add_host(i)

    def host_state_dir(self, i: int) -> Path:
        """What host i keeps across a restart (its transfer grants): its own even
        when the instances directory is shared."""
        return self.cfg.state_dir / "hosts" / host_name(i) / "state"

    async def add_host(self, i: int, data_port: int | None = None) -> ComputeManager:
        """Start compute host i (again: `data_port` gives it back the port its
        peers' transfers are retrying)."""
        name = host_name(i)
        path = self.instances_path(i)
        driver = load_driver(self.cfg.driver, name, path)
        images = ImageCache(path / "_base", f"{self.client_url}/image",
                            headers={"X-Auth-Token": self.service_token})
        st = self.cfg.settings
        mgr = ComputeManager(name, driver, self.bus, images, data_ip(i),
                             self.cfg.data_port if data_port is None else data_port,
                             report_interval=st.report_interval,
                             state_dir=self.host_state_dir(i),
                             max_bandwidth=st.host_max_bandwidth)
        since = utcnow()
        await mgr.start()
        self.computes.append(mgr)
        await self._registered(name, since)
        return mgr

    async def stop_host(self, name: str) -> int:
        """Stop one compute agent as a crash or restart would (its files and grants
        stay on disk); returns its data-plane port for `add_host`."""
        mgr = self.compute(name)
        port = mgr.transfer.port
        self.computes.remove(mgr)
        await mgr.stop()
        return port

    async def _registered(self, host: str, since: dt.datetime, timeout: float = 30) -> None:
        """Wait until the conductor has recorded a heartbeat (a cast) the host sent
        after `since`, so a request right after start-up finds it up, also a
        host started again after it was seen down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            async with self.sessions() as s:
                found = (await s.execute(select(Service.id).where(
                    Service.host == host, Service.binary == "ferry-compute",
                    Service.last_seen_up >= since))).first()
            if found is not None:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{host} did not register with the conductor in {timeout:.0f}s")

    def compute(self, name: str) -> ComputeManager:
        return next(c for c in self.computes if c.host == name)

    async def _seed_flavors(self) -> None:
        async with self.sessions() as s, s.begin():
            if (await s.execute(select(Flavor).limit(1))).scalar_one_or_none() is not None:
                return
            for fid, name, vcpus, ram, disk in DEFAULT_FLAVORS:
                s.add(Flavor(flavorid=fid, name=name, vcpus=vcpus, memory_mb=ram,
                             root_gb=disk, extra_specs={}))

    async def serve_forever(self) -> None:
        assert self._server_task is not None
        await self._server_task

    async def stop(self) -> None:
        await self.conductor.stop()
        for c in self.computes:
            await c.stop()
        self.computes.clear()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server_task
        await self.bus.close()
        await self.engine.dispose()

