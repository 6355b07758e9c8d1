"""Rich renderings shared by commands: the step timeline and a live migration view."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

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


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if rate < 1000 or unit == "GB":
            return f"{rate:.0f} {unit}/s" if unit == "B" else f"{rate:.1f} {unit}/s"
        rate /= 1000
    return ""  # unreachable


def eta_text(eta: float | None) -> str:
    if eta is None:
        return "ETA -:--"
    minutes, seconds = divmod(int(eta + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else \
        f"ETA {minutes}:{seconds:02d}"


class _RateColumn(ProgressColumn):
    """The rate and ETA the conductor recorded (from the source's sliding window),
    not one guessed from this client's polling."""

    def render(self, task: Task) -> Text:
        if "rate" not in task.fields:
            return Text("")
        return Text(f"{rate_text(task.fields['rate'])}  {eta_text(task.fields['eta'])}",
                    style="progress.data.speed")


def transfer_bars(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.percentage:>5.1f}%"), DownloadColumn(), _RateColumn(),
                    console=console)


def update_bars(bars: Progress, tasks: dict[str, TaskID], mig: dict[str, Any]) -> None:
    """One bar for the migration's disks, and one per disk when there are several."""
    fields: dict[str, Any] = {"rate": mig.get("rate"), "eta": mig.get("eta")}
    rows: list[tuple[str, str, int, int, dict[str, Any]]] = [
        ("disks", f"disks ({mig['phase']})", mig["bytes_done"], mig["bytes_total"], fields)]
    files = mig.get("files") or {}
    if len(files) > 1:
        rows += [(name, f"  {name}", f["done"], f["total"], {}) for name, f in files.items()]
    for key, label, done, total, extra in rows:
        if key not in tasks:
            tasks[key] = bars.add_task(label, total=None)
        bars.update(tasks[key], description=label, completed=done, total=total or None,
                    **extra)


def watch(client: FerryClient, ident: str, console: Console, until: set[str] | None = None,
          timeout: float = 1800, transient: bool = False) -> dict[str, Any]:
    """Live view until the migration's status is in `until` (default: it rests):
    the step timeline and progress bars with the recorded rate and ETA."""
    until = until or RESTING_STATUSES
    bars = transfer_bars(console)
    tasks: dict[str, TaskID] = {}
    deadline = time.monotonic() + timeout
    mig = client.migration(ident)
    update_bars(bars, tasks, mig)
    with Live(Group(timeline(mig), bars), console=console, refresh_per_second=4,
              transient=transient) as live:
        while mig["status"] not in until and time.monotonic() < deadline:
            time.sleep(0.25)
            mig = client.migration(ident)
            update_bars(bars, tasks, mig)
            live.update(Group(timeline(mig), bars))
    return mig
