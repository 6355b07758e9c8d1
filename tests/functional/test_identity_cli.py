"""`ferry project|user|role` against a running cloud with authentication on,
logging in through the clouds.yaml that `ferry up` wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.cli.main import app
from ferry.cmd.background import CloudThread
from ferry.cmd.embedded import CloudConfig
from tests.support.cloud import fast_settings


@pytest.fixture
def clouds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    thread = CloudThread(CloudConfig(state_dir=tmp_path / "s", hosts=1, driver="fake",
                                     listen_port=0, settings=fast_settings()))
    cloud = thread.start()
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.clouds_yaml))
    monkeypatch.delenv("FERRY_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    yield cloud.clouds_yaml
    thread.stop()


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_project_user_role_lifecycle(clouds: Path) -> None:
    assert "created" in run("project", "create", "team")
    out = run("user", "create", "ann", "--password", "pw", "--project", "team",
              "--role", "manager")
    assert "granted" in out
    out = run("role", "assignments", "--user", "ann")
    assert "manager" in out and "team" in out
    assert "ann" in run("user", "list") and "team" in run("project", "list")
    assert {"admin", "manager", "member", "reader"} <= set(run("role", "list").split())
    run("role", "remove", "manager", "--user", "ann", "--project", "team")
    assert "ann" not in run("role", "assignments")
    run("user", "delete", "ann")
    run("project", "delete", "team")
    assert "team" not in run("project", "list")


def test_unknown_names_fail_cleanly(clouds: Path) -> None:
    result = CliRunner().invoke(app, ["role", "add", "member", "--user", "ghost",
                                      "--project", "admin"])
    assert result.exit_code != 0
