"""The `ferry` CLI against a running embedded cloud (fake driver), as a user types it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ferry.cli.main import app
from tests.support.cli import run


def test_cli_boot_migrate_confirm_and_inspect(url: str, tmp_path: Path) -> None:
    img = tmp_path / "base.raw"
    img.write_bytes(b"\0" * 65536)
    assert "active" in run("image", "upload", "base", str(img), "--disk-format", "raw")
    assert "base" in run("image", "list")
    assert "ferry.tiny" in run("flavor", "list")
    assert "f.custom" in run("flavor", "create", "f.custom", "--vcpus", "1", "--ram", "128")
    out = run("server", "create", "vm1", "--image", "base", "--flavor", "ferry.tiny", "--wait")
    assert "ACTIVE on host1" in out
    assert "vm1" in run("server", "list")
    assert "GUEST-BOOTED" in run("server", "console", "vm1")

    out = run("server", "migrate", "vm1", "--confirm")
    assert "transferring" in out and "done" in out and "guest downtime" in out
    show = run("server", "show", "vm1")
    assert "host2" in show and "ACTIVE" in show
    out = run("migration", "list")
    assert "confirmed" in out and "host1" in out and "host2" in out
    assert "up" in run("host", "list")


def test_cli_migrate_to_host_then_revert(url: str, tmp_path: Path) -> None:
    img = tmp_path / "base.raw"
    img.write_bytes(b"\0" * 4096)
    run("image", "upload", "base", str(img), "--disk-format", "raw")
    run("server", "create", "vm2", "--image", "base", "--wait")
    out = run("server", "migrate", "vm2", "--host", "host2", "--wait")
    assert "verify" in out
    run("server", "revert", "vm2")
    from ferry.cli.client import FerryClient

    s = FerryClient().wait_server(FerryClient().server("vm2")["id"], {"ACTIVE"}, timeout=20)
    assert s["OS-EXT-SRV-ATTR:host"] == "host1"


def test_cli_errors_are_clear(url: str) -> None:
    result = CliRunner().invoke(app, ["server", "migrate", "nope"])
    assert result.exit_code != 0
    assert "No server with a name or ID of 'nope'" in str(result.exception) + result.output
