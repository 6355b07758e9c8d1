"""The cluster services, one process each: ferry-api, ferry-conductor, ferry-compute.

They share nothing but the database (API and conductors only) and the broker.
A compute host holds broker credentials and no database credentials.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from pathlib import Path

import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ferry.api.app import create_app
from ferry.api.context import ApiDeps
from ferry.bus.base import Bus
from ferry.bus.rabbitmq import BrokerUnavailable, RabbitBus
from ferry.cmd.config import (
    ConfigError,
    ServiceConfig,
    compute_state_dir,
    is_loopback,
    require,
)
from ferry.compute.manager import ComputeManager
from ferry.compute.virt.loader import load_driver
from ferry.conductor.manager import ConductorEndpoint
from ferry.db.session import make_engine, make_sessionmaker
from ferry.image.cache import ImageCache

log = logging.getLogger(__name__)


class StartupError(Exception):
    pass


async def check_database(engine: AsyncEngine, url: str) -> None:
    try:
        async with asyncio.timeout(10):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:
        safe = url.split("@")[-1]
        raise StartupError(f"cannot reach the database at {safe}: {exc}") from exc


async def connect_bus(cfg: ServiceConfig, attempts: int = 0) -> RabbitBus:
    """Connect, retrying with backoff while the broker is down (0 = forever)."""
    delay, n = 1.0, 0
    while True:
        bus = RabbitBus(cfg.bus_url, prefix=cfg.bus_prefix)
        try:
            await bus.connect()
            return bus
        except BrokerUnavailable as exc:
            n += 1
            if attempts and n >= attempts:
                raise StartupError(str(exc)) from exc
            log.warning("%s; retrying in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_api(cfg: ServiceConfig) -> None:
    require(cfg, "database_url", "bus_url")
    engine = make_engine(cfg.database_url)
    await check_database(engine, cfg.database_url)
    bus = await connect_bus(cfg)
    host, _, port = cfg.api_listen.rpartition(":")
    if cfg.api_insecure_no_auth and not is_loopback(host):
        raise ConfigError(f"insecure_no_auth only listens on loopback, not on {host}")
    if not cfg.api_insecure_no_auth and not cfg.service_token:
        raise ConfigError("service_token (FERRY_SERVICE_TOKEN) is needed so compute hosts "
                          "can read base images; share the same value with them")
    deps = ApiDeps(make_sessionmaker(engine), bus, cfg.settings, Path(cfg.image_dir),
                   insecure_no_auth=cfg.api_insecure_no_auth,
                   service_token=cfg.service_token or None, token_ttl=cfg.token_ttl)
    server = uvicorn.Server(uvicorn.Config(create_app(deps), host=host, port=int(port),
                                           log_level="info", lifespan="off"))
    try:
        await server.serve()
    finally:
        await bus.close()
        await engine.dispose()


async def run_conductor(cfg: ServiceConfig) -> None:
    require(cfg, "database_url", "bus_url")
    engine = make_engine(cfg.database_url)
    await check_database(engine, cfg.database_url)
    bus: Bus = await connect_bus(cfg)
    conductor = ConductorEndpoint.create(make_sessionmaker(engine), bus, cfg.settings,
                                         name=cfg.conductor_name or None)
    await conductor.start()
    log.info("%s serving", conductor.name)
    try:
        await _until_signalled()
    finally:
        await conductor.stop()
        await bus.close()
        await engine.dispose()


async def run_compute(cfg: ServiceConfig) -> None:
    require(cfg, "bus_url", "host", "data_address")
    if cfg.database_url:
        raise ConfigError("a compute host must not hold database credentials; "
                          "remove [database] url / FERRY_DATABASE_URL")
    bus = await connect_bus(cfg)
    path = Path(cfg.instances_path)
    driver = load_driver(cfg.driver, cfg.host, path)
    ip, _, port = cfg.data_address.rpartition(":")
    headers = {"X-Auth-Token": cfg.service_token} if cfg.service_token else {}
    mgr = ComputeManager(cfg.host, driver, bus,
                         ImageCache(path / "_base", cfg.image_endpoint, headers=headers),
                         ip, int(port or 0), zone=cfg.zone,
                         report_interval=cfg.settings.report_interval,
                         state_dir=compute_state_dir(cfg),
                         max_bandwidth=cfg.settings.host_max_bandwidth)
    await mgr.start()
    log.info("compute %s serving, data plane %s", cfg.host, mgr.data_address)
    try:
        await _until_signalled()
    finally:
        await mgr.stop()
        await bus.close()
