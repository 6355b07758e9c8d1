"""`ferry host list|disable|enable`: compute hosts and taking them out of scheduling.

Disabling a host (Nova's PUT /os-services/{id}, admin-only by default) stops
the scheduler from choosing it for new servers and migrations; servers on it
keep running and can be migrated off. `enable` puts it back.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ferry.cli.client import FerryClient

console = Console()
host = typer.Typer(help="Compute hosts: list, disable, enable.", no_args_is_help=True)


@host.command("list")
def host_list() -> None:
    c = FerryClient()
    services = {s["host"]: s for s in c.compute_services()}
    table = Table("host", "state", "status", "reason", "data plane", "vcpus", "ram MiB",
                  "disk GiB")
    for h in c.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]:
        svc = services.get(h["hypervisor_hostname"], {})
        state = h["state"] + (" (forced)" if svc.get("forced_down") else "")
        table.add_row(h["hypervisor_hostname"], state, h["status"],
                      svc.get("disabled_reason") or "", h["host_ip"],
                      f"{h['vcpus_used']}/{h['vcpus']}",
                      f"{h['memory_mb_used']}/{h['memory_mb']}",
                      f"{h['local_gb_used']}/{h['local_gb']}")
    console.print(table)


@host.command("disable")
def host_disable(name: str, reason: str | None = typer.Option(
        None, "--reason", help="why (shown by `host list` and os-services)")) -> None:
    """Stop scheduling servers and migrations to NAME."""
    body: dict[str, str] = {"status": "disabled"}
    if reason:
        body["disabled_reason"] = reason
    svc = FerryClient().update_compute_service(name, body)
    console.print(f"{svc['host']}: disabled" + (f" ({reason})" if reason else ""))


@host.command("enable")
def host_enable(name: str) -> None:
    """Schedule to NAME again."""
    svc = FerryClient().update_compute_service(name, {"status": "enabled"})
    console.print(f"{svc['host']}: enabled")
