"""`ferry server migrate --max-bandwidth` and `ferry migration watch`: the cap
reaches the migration and the live view shows progress with rate and ETA."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ferry.cli.client import FerryClient
from ferry.cli.main import app
from ferry.cli.render import eta_text, rate_text
from tests.support.cli import run


def test_migrate_with_a_cap_and_watch_it(url: str, tmp_path: Path) -> None:
    img = tmp_path / "base.raw"
    img.write_bytes(b"\0" * 4096)
    run("image", "upload", "base", str(img), "--disk-format", "raw")
    run("server", "create", "vm1", "--image", "base", "--wait")
    c = FerryClient()
    sid = c.server("vm1")["id"]

    run("server", "migrate", "vm1", "--max-bandwidth", "150K")
    [mig] = c.migrations(sid)
    assert mig["max_bandwidth"] == 150_000
    out = run("migration", "watch", mig["uuid"])
    assert "transferring" in out and "verify" in out
    assert "kB/s" in out and "ETA" in out, out  # the recorded rate and ETA
    assert "100.0%" in out
    assert f"{mig['uuid']}: finished" in out
    done = c.migration(mig["uuid"])
    assert done["bytes_done"] == done["bytes_total"] > 0


def test_a_bad_cap_is_refused_before_anything_is_sent(url: str, tmp_path: Path) -> None:
    img = tmp_path / "base.raw"
    img.write_bytes(b"\0" * 4096)
    run("image", "upload", "base", str(img), "--disk-format", "raw")
    run("server", "create", "vm2", "--image", "base", "--wait")
    for value in ("0", "-5M", "fast", "5X"):
        result = CliRunner().invoke(app, ["server", "migrate", "vm2",
                                          f"--max-bandwidth={value}"])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--max-bandwidth'" in result.output, result.output
    assert FerryClient().migrations(FerryClient().server("vm2")["id"]) == []


def test_rate_and_eta_text() -> None:
    assert rate_text(None) == "-"
    assert rate_text(512) == "512 B/s"
    assert rate_text(150_000) == "150.0 kB/s"
    assert rate_text(52_400_000) == "52.4 MB/s"
    assert rate_text(3.2e9) == "3.2 GB/s"
    assert eta_text(None) == "ETA -:--"
    assert eta_text(75.4) == "ETA 1:15"
    assert eta_text(3725) == "ETA 1:02:05"
