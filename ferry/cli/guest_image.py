"""``ferry guest-image``: build the tiny self-checking test guest disk.

Registered in the main CLI as the ``guest-image`` sub-command group; more
commands about test guests (e.g. reading markers from a console log) belong
here as further ``@app.command()`` functions.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ferry.image.guest import GuestImageError, build_guest_image

app = typer.Typer(
    help="Build the tiny test guest disk used by migration tests.",
    no_args_is_help=True,
)

_console = Console()


@app.callback()
def _group() -> None:
    # A callback keeps "build" a real sub-command even while it is the only one.
    """Build the tiny test guest disk used by migration tests."""


@app.command()
def build(
    output: Path = typer.Option(..., "--output", "-o", help="Raw disk image to write."),
    guest_id: str = typer.Option(..., "--id", help="Guest id printed in the boot marker."),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Package cache (default: $FERRY_CACHE_DIR or ~/.cache/ferry/guest).",
    ),
) -> None:
    """Build a raw, bootable guest disk that reports GUEST-BOOTED on ttyS0."""
    try:
        with _console.status(f"building guest image for {guest_id}..."):
            path = build_guest_image(output, guest_id, cache_dir)
    except GuestImageError as exc:
        _console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    size = path.stat().st_size
    _console.print(f"[green]built[/green] {path} ({size / (1024 * 1024):.1f} MiB, raw)")
