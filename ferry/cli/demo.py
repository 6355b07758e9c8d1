"""`ferry demo`: the main job, end to end, with real guests.

Two libvirt hosts in one process, the tiny guest built from Debian packages,
a server booted, migrated with a live view of every step, checked by its
console marker on the other host (same id, boot counter + 1, payload ok),
confirmed, and the timeline printed.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel

from ferry.cli import render
from ferry.cli.client import FerryClient
from ferry.cmd.background import CloudThread
from ferry.cmd.embedded import CloudConfig
from ferry.conf import Settings
from ferry.image.guest import Marker, build_guest_image, last_marker

console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_marker(client: FerryClient, server_id: str, boot: int, timeout: float = 180
                ) -> Marker:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.action(server_id, {"os-getConsoleOutput": {"length": 20}})
        m = last_marker(r.json()["output"])
        if m is not None and m.boot >= boot:
            return m
        time.sleep(0.5)
    raise TimeoutError(f"the guest did not print boot={boot} within {timeout:.0f}s")


def demo(state_dir: Path = typer.Option(Path("state/demo"), help="wiped at start"),
         driver: str = typer.Option("libvirt", help="libvirt (real guests) or fake"),
         keep: bool = typer.Option(False, help="leave the server running at the end")) -> None:
    """Boot a real guest, migrate it to the other host, verify, confirm."""
    t0 = time.monotonic()
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    if driver == "libvirt":
        from ferry.compute.virt.libvirt.daemons import ensure_daemons

        ensure_daemons()
    settings = Settings(shutdown_timeout=60, shutdown_retry_interval=2)
    thread = CloudThread(CloudConfig(state_dir=state_dir.resolve(), hosts=2, driver=driver,
                                     listen_port=_free_port(), insecure_no_auth=True,
                                     settings=settings))
    with console.status("starting Ferry (API, conductor, host1, host2)..."):
        cloud = thread.start()
    client = FerryClient(cloud.url)
    try:
        _run(client, state_dir, driver, keep)
    finally:
        thread.stop()
    console.print(f"demo finished in {time.monotonic() - t0:.1f}s")


def _run(client: FerryClient, state_dir: Path, driver: str, keep: bool) -> None:
    image_path = state_dir / "guest.img"
    guest_id = f"demo-{int(time.time())}"
    with console.status("building the guest image from Debian packages..."):
        build_guest_image(image_path, guest_id)
    img = client.upload_image("ferry-guest", str(image_path), "raw")
    console.print(f"image {img['id']}: {img['size'] / 2**20:.1f} MiB uploaded")

    server = client.create_server("demo-vm", img["id"], client.flavor("ferry.tiny")["id"])
    with console.status("booting demo-vm..."):
        s = client.wait_server(server["id"], {"ACTIVE"})
    src = s["OS-EXT-SRV-ATTR:host"]
    if driver == "libvirt":
        with console.status(f"waiting for the guest's marker on {src}..."):
            before = wait_marker(client, s["id"], 1)
        console.print(Panel(f"on {src}: GUEST-BOOTED id={before.guest_id} boot={before.boot} "
                            f"payload={'ok' if before.payload_ok else 'BAD'}", title="before"))

    client.action(s["id"], {"migrate": None})
    mig = client.migrations(s["id"])[0]
    console.print(f"migrating {s['id']} away from {src} (migration {mig['uuid']})")
    mig = render.watch(client, mig["uuid"], console, transient=True)
    console.print(f"[bold]VERIFY_RESIZE[/bold] after {len(mig['steps'])} steps; "
                  f"guest downtime so far {mig['downtime_s'] or 0:.2f}s")
    if mig["status"] != "finished":
        console.print(f"[red]migration ended {mig['status']}:[/red] {mig['error']}")
        raise typer.Exit(1)
    s = client.wait_server(s["id"], {"VERIFY_RESIZE"})
    dest = s["OS-EXT-SRV-ATTR:host"]
    if driver == "libvirt":
        with console.status(f"waiting for the guest's marker on {dest}..."):
            after = wait_marker(client, s["id"], before.boot + 1)
        ok = (after.guest_id == before.guest_id and after.boot == before.boot + 1
              and after.payload_ok)
        console.print(Panel(f"on {dest}: GUEST-BOOTED id={after.guest_id} boot={after.boot} "
                            f"payload={'ok' if after.payload_ok else 'BAD'}",
                            title="after", border_style="green" if ok else "red"))
        if not ok:
            raise typer.Exit(1)

    client.action(s["id"], {"confirmResize": None})
    mig = render.watch(client, mig["uuid"], console, until=render.FINAL_STATUSES,
                       transient=True)
    client.wait_server(s["id"], {"ACTIVE"})
    console.print(render.timeline(mig))
    if not keep:
        client.request("DELETE", f"/compute/v2.1/servers/{s['id']}")
        _wait_gone(client, s["id"])


def _wait_gone(client: FerryClient, server_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(x["id"] == server_id for x in client.servers()):
            return
        time.sleep(0.5)
