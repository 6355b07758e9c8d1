"""`ferry migration|image|flavor ...` (hosts: `ferry/cli/hosts.py`)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ferry.cli import render
from ferry.cli.client import FerryClient

console = Console()
migration = typer.Typer(help="Migrations: list, show, watch.", no_args_is_help=True)
image = typer.Typer(help="Images (Glance v2 subset).", no_args_is_help=True)
flavor = typer.Typer(help="Flavors.", no_args_is_help=True)


@migration.command("list")
def migration_list(server: str | None = typer.Option(None)) -> None:
    c = FerryClient()
    sid = c.server(server)["id"] if server else None
    table = Table("id", "uuid", "server", "status", "phase", "source", "dest", "downtime")
    for m in c.migrations(sid):
        dt = f"{m['downtime_s']:.2f}s" if m["downtime_s"] is not None else ""
        table.add_row(str(m["id"]), m["uuid"], m["instance_uuid"], m["status"], m["phase"],
                      m["source_compute"] or "", m["dest_compute"] or "", dt)
    console.print(table)


@migration.command("show")
def migration_show(ident: str) -> None:
    console.print(render.timeline(FerryClient().migration(ident)))


@migration.command("watch")
def migration_watch(ident: str = typer.Argument(..., help="migration uuid or id"),
                    final: bool = typer.Option(
                        False, help="keep watching past VERIFY_RESIZE until it ends")) -> None:
    """Steps, progress bars, rate and ETA, live, until the migration rests."""
    mig = render.watch(FerryClient(), ident, console,
                       until=render.FINAL_STATUSES if final else render.RESTING_STATUSES)
    console.print(f"{mig['uuid']}: {mig['status']}")


@image.command("upload")
def image_upload(name: str, path: str, disk_format: str = typer.Option("qcow2")) -> None:
    img = FerryClient().upload_image(name, path, disk_format)
    console.print(f"image {img['id']} {img['status']} ({img['size']} bytes)")


@image.command("list")
def image_list() -> None:
    table = Table("id", "name", "status", "format", "size")
    for i in FerryClient().images():
        table.add_row(i["id"], i["name"], i["status"], str(i["disk_format"]), str(i["size"]))
    console.print(table)


@flavor.command("list")
def flavor_list() -> None:
    table = Table("id", "name", "vcpus", "ram", "disk")
    for f in FerryClient().get("/compute/v2.1/flavors/detail")["flavors"]:
        table.add_row(f["id"], f["name"], str(f["vcpus"]), str(f["ram"]), str(f["disk"]))
    console.print(table)


@flavor.command("create")
def flavor_create(name: str, vcpus: int = typer.Option(1), ram: int = typer.Option(128),
                  disk: int = typer.Option(1)) -> None:
    f = FerryClient().request("POST", "/compute/v2.1/flavors", json={"flavor": {
        "name": name, "vcpus": vcpus, "ram": ram, "disk": disk}}).json()["flavor"]
    console.print(f"flavor {f['id']} {f['name']}")
