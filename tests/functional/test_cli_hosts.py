"""`ferry host list|disable|enable` against a running embedded cloud (fake driver)."""

from __future__ import annotations

from typer.testing import CliRunner

from ferry.cli.client import FerryClient
from ferry.cli.main import app
from tests.support.cli import run


def _row(listing: str, host: str) -> str:
    return next(line for line in listing.splitlines() if f" {host} " in line)


def test_disable_and_enable_a_host(url: str) -> None:
    row = _row(run("host", "list"), "host2")
    assert "up" in row and "enabled" in row
    assert "host2: disabled (disk swap)" in run("host", "disable", "host2", "--reason",
                                                "disk swap")
    row = _row(run("host", "list"), "host2")
    assert "disabled" in row and "disk swap" in row
    assert "enabled" in _row(run("host", "list"), "host1")
    [svc] = FerryClient().compute_services("host2")
    assert (svc["status"], svc["disabled_reason"]) == ("disabled", "disk swap")

    assert "host2: enabled" in run("host", "enable", "host2")
    [svc] = FerryClient().compute_services("host2")
    assert (svc["status"], svc["disabled_reason"]) == ("enabled", None)


def test_unknown_host_is_an_error_and_changes_nothing(url: str) -> None:
    result = CliRunner().invoke(app, ["host", "disable", "host9"])
    assert result.exit_code != 0
    assert "Compute host host9 could not be found." in str(result.exception)
    assert {s["status"] for s in FerryClient().compute_services()} == {"enabled"}
