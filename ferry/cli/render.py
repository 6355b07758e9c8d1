"""Rich renderings shared by commands: the step timeline and a live migration view."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from ferry.cli.client import FerryClient

FINAL_STATUSES = {"confirmed", "reverted", "error"}
RESTING_STATUSES = FINAL_STATUSES | {"finished"}


def _t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.rstrip("Z"))


def timeline(mig: dict[str, Any]) -> Table:
    """One row per step with how long it lasted, then the guest's downtime."""
    table = Table(title=f"migration {mig['uuid']} ({mig['status']})", show_lines=False)
    table.add_column("step")
    table.add_column("started", style="dim")
    table.add_column("duration", justify="right")
    table.add_column("note", overflow="fold")
    steps = mig.get("steps") or []
    for i, st in enumerate(steps):
        # A step's note is written by the event that ended it (the next entry).
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if nxt is not None:
            dur = f"{(_t(nxt['at']) - _t(st['at'])).total_seconds():.2f}s"
        else:
            dur = "…" if mig["status"] not in RESTING_STATUSES else ""
        table.add_row(st["phase"], st["at"][11:23], dur, (nxt or {}).get("note", ""))
    if mig.get("downtime_s") is not None:
        table.caption = f"guest downtime (power-off to running): {mig['downtime_s']:.2f}s"
    if mig.get("error"):
        table.caption = f"[red]{mig['error']}[/red]"
    return table


def watch(client: FerryClient, ident: str, console: Console, until: set[str] | None = None,
          timeout: float = 1800, transient: bool = False) -> dict[str, Any]:
    """Live view until the migration's status is in `until` (default: it rests)."""
    until = until or RESTING_STATUSES
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), console=console)
    task = bar.add_task("disks", total=None)
    deadline = time.monotonic() + timeout
    mig = client.migration(ident)
    with Live(Group(timeline(mig), bar), console=console, refresh_per_second=4,
              transient=transient) as live:
        while mig["status"] not in until and time.monotonic() < deadline:
            time.sleep(0.25)
            mig = client.migration(ident)
            bar.update(task, completed=mig["bytes_done"], total=mig["bytes_total"] or None,
                       description=f"disks ({mig['phase']})")
            live.update(Group(timeline(mig), bar))
    return mig
