"""The `ferry` command: one sub-command group per resource.

To add a command group: write `ferry/cli/<group>.py` with a `typer.Typer()`
and register it here with `app.add_typer`.
"""

from __future__ import annotations

import typer

from ferry.cli import demo, guest_image, hosts, identity, resources, serve, servers, up
from ferry.cli.client import ApiFailure

app = typer.Typer(help="Ferry: cold migration of VMs between KVM hosts.", no_args_is_help=True)
app.command("up")(up.up)
app.command("demo")(demo.demo)
app.add_typer(servers.app, name="server")
app.add_typer(resources.migration, name="migration")
app.add_typer(hosts.host, name="host")
app.add_typer(resources.image, name="image")
app.add_typer(resources.flavor, name="flavor")
app.add_typer(guest_image.app, name="guest-image")
app.add_typer(serve.serve, name="serve")
app.add_typer(serve.db, name="db")
app.add_typer(identity.user, name="user")
app.add_typer(identity.project, name="project")
app.add_typer(identity.role, name="role")


def main() -> None:
    try:
        app()
    except ApiFailure as exc:
        typer.secho(f"error: {exc.message} (HTTP {exc.status})", fg="red", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
