"""`ferry up`: the embedded default in one process, until Ctrl-C.

Identity v3 is on unless `--insecure-no-auth`: the first start prints the
admin password it generated (once; it is also in `<state-dir>/clouds.yaml`,
mode 0600) unless `--admin-password` / FERRY_ADMIN_PASSWORD gives one.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer
from rich.console import Console

from ferry.cmd.embedded import CloudConfig, EmbeddedCloud, InsecureBindRefused
from ferry.conf import Settings

console = Console()


def up(
    hosts: int = typer.Option(2, help="number of compute hosts (host1..hostN)"),
    driver: str = typer.Option("libvirt", help="virt driver: libvirt or fake"),
    state_dir: Path = typer.Option(Path("state"), help="where all state lives"),
    listen: str = typer.Option("127.0.0.1:8774", help="API address HOST:PORT"),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth",
        help="development only: every request is admin (loopback addresses only)"),
    admin_password: str | None = typer.Option(
        None, envvar="FERRY_ADMIN_PASSWORD",
        help="admin's password on first start (default: generated and printed once); "
             "given on a later start, it resets the password"),
    token_ttl: float = typer.Option(3600, help="token lifetime in seconds"),
    policy_file: Path | None = typer.Option(
        None, help="policy overrides, oslo.policy YAML (default: <state-dir>/policy.yaml)"),
    shared_storage: bool = typer.Option(False, help="all hosts share one instances dir"),
    resize_confirm_window: float = typer.Option(0, help="auto-confirm after N s (0: never)"),
    data_port: int = typer.Option(0, help="data-plane port on each host (0: any free)"),
    verbose: bool = typer.Option(False, "-v"),
) -> None:
    """Start API, conductor, scheduler and N compute hosts in one process."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = listen.rpartition(":")
    cfg = CloudConfig(state_dir=state_dir.resolve(), hosts=hosts, driver=driver,
                      listen_host=host or "127.0.0.1", listen_port=int(port),
                      insecure_no_auth=insecure_no_auth, data_port=data_port,
                      shared_storage=shared_storage, admin_password=admin_password,
                      token_ttl=token_ttl,
                      policy_file=policy_file.resolve() if policy_file else None,
                      settings=Settings(resize_confirm_window=resize_confirm_window))
    try:
        asyncio.run(_serve(cfg))
    except InsecureBindRefused as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


async def _serve(cfg: CloudConfig) -> None:
    cloud = EmbeddedCloud(cfg)
    await cloud.start()
    console.print(f"Ferry is up: API {cloud.url}/compute/v2.1 and {cloud.url}/image/v2, "
                  f"{cfg.hosts} {cfg.driver} hosts, state in {cfg.state_dir}")
    for c in cloud.computes:
        console.print(f"  {c.host}: data plane {c.data_address}, "
                      f"instances {c.driver.instances_path}")
    if cfg.insecure_no_auth:
        console.print("[yellow]--insecure-no-auth: every request is an admin[/yellow]")
    else:
        console.print(f"Identity v3 at {cloud.client_url}/identity/v3; credentials in "
                      f"{cloud.clouds_yaml} (cloud 'ferry'):", soft_wrap=True)
        console.print(f"  export OS_CLIENT_CONFIG_FILE={cloud.clouds_yaml} OS_CLOUD=ferry",
                      soft_wrap=True, highlight=False)
        boot = cloud.bootstrapped
        if boot is not None and boot.generated_password is not None:
            # Printed once, on the first start; later starts never show it again.
            console.print(f"  admin password (generated, shown once): "
                          f"[bold]{boot.generated_password}[/bold]", highlight=False,
                          soft_wrap=True)
    console.print("Ctrl-C stops it; starting again on the same state dir carries on.")
    try:
        await cloud.serve_forever()
    finally:
        await cloud.stop()
        console.print("stopped cleanly")
