"""`ferry server ...`: the user's side of a server and its moves."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ferry.cli import render
from ferry.cli.client import FerryClient
from ferry.cmd.config import parse_bandwidth

app = typer.Typer(help="Servers: create, inspect, stop/start, migrate, confirm, revert.",
                  no_args_is_help=True)
console = Console()


def _row(s: dict[str, Any]) -> list[str]:
    return [s["id"], s["name"], s["status"], s.get("OS-EXT-STS:task_state") or "",
            s.get("OS-EXT-SRV-ATTR:host") or "", str(s.get("OS-EXT-STS:power_state", ""))]


@app.command("list")
def list_() -> None:
    table = Table("id", "name", "status", "task", "host", "power")
    for s in FerryClient().servers():
        table.add_row(*_row(s))
    console.print(table)


@app.command()
def show(server: str) -> None:
    s = FerryClient().server(server)
    table = Table("field", "value")
    for k in sorted(s):
        table.add_row(k, str(s[k]))
    console.print(table)


@app.command()
def create(name: str, image: str = typer.Option(..., help="image id or name"),
           flavor: str = typer.Option("ferry.tiny", help="flavor id or name"),
           wait: bool = typer.Option(False, help="wait until ACTIVE")) -> None:
    c = FerryClient()
    image_id = next((i["id"] for i in c.images() if image in (i["id"], i["name"])), image)
    s = c.create_server(name, image_id, c.flavor(flavor)["id"])
    console.print(f"server {s['id']} accepted")
    if wait:
        with console.status("building..."):
            s = c.wait_server(s["id"], {"ACTIVE"})
        console.print(f"{s['id']} ACTIVE on {s.get('OS-EXT-SRV-ATTR:host')}")


@app.command()
def delete(server: str) -> None:
    c = FerryClient()
    s = c.server(server)
    c.request("DELETE", f"/compute/v2.1/servers/{s['id']}")
    console.print(f"deleting {s['id']}")


@app.command()
def stop(server: str) -> None:
    c = FerryClient()
    c.action(c.server(server)["id"], {"os-stop": None})


@app.command()
def start(server: str) -> None:
    c = FerryClient()
    c.action(c.server(server)["id"], {"os-start": None})


@app.command()
def console_(server: str = typer.Argument(...),
             lines: int = typer.Option(50, "--lines", "-n")) -> None:
    c = FerryClient()
    r = c.action(c.server(server)["id"], {"os-getConsoleOutput": {"length": lines}})
    console.print(r.json()["output"], end="", markup=False, highlight=False)


app.command("console")(console_)


def _bandwidth(value: str | None) -> int | None:
    """--max-bandwidth as bytes/s; refused here, before any request is sent."""
    if value is None:
        return None
    try:
        rate = parse_bandwidth(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if rate <= 0:
        raise typer.BadParameter(f"{value!r} is not more than 0 bytes/s")
    return rate


@app.command()
def migrate(server: str, host: str | None = typer.Option(None, help="destination host"),
            max_bandwidth: str | None = typer.Option(
                None, "--max-bandwidth", callback=_bandwidth,
                help="cap this migration's transfer, bytes/s: 50M = 50*10^6, 50Mi = 50*2^20"),
            wait: bool = typer.Option(False, help="follow the steps until VERIFY_RESIZE"),
            confirm: bool = typer.Option(False, help="confirm as soon as it is verified")
            ) -> None:
    c = FerryClient()
    s = c.server(server)
    body: dict[str, Any] = {}
    if host:
        body["host"] = host
    if max_bandwidth is not None:
        # Ferry's extension key (Nova clients never send it); bytes/s, checked above.
        body["ferry:max_bandwidth"] = int(max_bandwidth)
    c.action(s["id"], {"migrate": body or None})
    console.print(f"migration of {s['id']} accepted")
    if not (wait or confirm):
        return
    mig = c.migrations(s["id"])[0]
    mig = render.watch(c, mig["uuid"], console)
    if mig["status"] == "error":
        console.print(f"[red]migration failed:[/red] {mig['error']}")
        raise typer.Exit(1)
    if confirm:
        c.action(s["id"], {"confirmResize": None})
        mig = render.watch(c, mig["uuid"], console, until=render.FINAL_STATUSES)
        console.print(render.timeline(mig))


@app.command("confirm")
def confirm_(server: str) -> None:
    c = FerryClient()
    c.action(c.server(server)["id"], {"confirmResize": None})


@app.command()
def revert(server: str) -> None:
    c = FerryClient()
    c.action(c.server(server)["id"], {"revertResize": None})
