"""`ferry serve api|conductor|compute` and `ferry db upgrade`: the cluster services."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
from rich.console import Console

from ferry.cmd import services
from ferry.cmd.config import ConfigError, ServiceConfig, load

console = Console(stderr=True)
serve = typer.Typer(help="Run one Ferry service (cluster deployments).", no_args_is_help=True)
db = typer.Typer(help="Database schema.", no_args_is_help=True)

CONFIG = typer.Option(None, "--config", "-c", help="TOML file (FERRY_* env overrides)")


def _cfg(path: Path | None) -> ServiceConfig:
    try:
        return load(path)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(coro_fn, cfg: ServiceConfig) -> None:  # type: ignore[no-untyped-def]
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(coro_fn(cfg))
    except (services.StartupError, ConfigError) as exc:
        console.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@serve.command("api")
def serve_api(config: Path | None = CONFIG) -> None:
    """Compute v2.1 / Image v2 API (needs the database and the broker)."""
    _run(services.run_api, _cfg(config))


@serve.command("conductor")
def serve_conductor(config: Path | None = CONFIG) -> None:
    """Conductor and scheduler (needs the database and the broker)."""
    _run(services.run_conductor, _cfg(config))


@serve.command("compute")
def serve_compute(config: Path | None = CONFIG) -> None:
    """A compute host (needs the broker only; never database credentials)."""
    _run(services.run_compute, _cfg(config))


@db.command("upgrade")
def db_upgrade(config: Path | None = CONFIG,
               url: str | None = typer.Option(None, help="database URL"),
               admin_password: str | None = typer.Option(
                   None, envvar="FERRY_ADMIN_PASSWORD",
                   help="first run: the admin's password (else one is generated)")) -> None:
    """Create or upgrade the schema (Alembic) and bootstrap the admin identity."""
    from ferry.db.migrate import upgrade

    target = url or _cfg(config).database_url
    if not target:
        console.print("[red]no database URL[/red] (--url, [database] url or "
                      "FERRY_DATABASE_URL)")
        raise typer.Exit(2)
    try:
        upgrade(target)
        made = asyncio.run(_bootstrap(target, admin_password))
    except Exception as exc:
        console.print(f"[red]upgrade failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print("schema is at head; admin user and project are in place")
    if made:
        console.print(f"generated admin password (shown once): {made}")


async def _bootstrap(url: str, admin_password: str | None) -> str | None:
    from ferry.db.session import make_engine, make_sessionmaker
    from ferry.identity.bootstrap import bootstrap

    engine = make_engine(url)
    try:
        done = await bootstrap(make_sessionmaker(engine), admin_password)
    finally:
        await engine.dispose()
    return done.generated_password
