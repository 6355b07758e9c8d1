"""Service configuration and start-up failures of the cluster services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ferry.cmd.config import ConfigError, load

FERRY = [sys.executable, "-m", "ferry.cli.main"]


def test_toml_with_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "ferry.toml"
    f.write_text('[database]\nurl = "postgresql://db/ferry"\n[bus]\nurl = "amqp://mq/"\n'
                 '[compute]\nhost = "kvm1"\n[settings]\nshutdown_timeout = 30\n')
    cfg = load(f, env={"FERRY_HOST": "kvm2", "FERRY_MAX_ATTEMPTS": "5",
                       "FERRY_API_INSECURE_NO_AUTH": "true"})
    assert cfg.database_url == "postgresql://db/ferry" and cfg.bus_url == "amqp://mq/"
    assert cfg.host == "kvm2"  # the environment wins over the file
    assert cfg.settings.shutdown_timeout == 30.0 and cfg.settings.max_attempts == 5
    assert cfg.api_insecure_no_auth is True


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "ferry.toml"
    f.write_text("[settings]\nshutdown_timout = 30\n")
    with pytest.raises(ConfigError, match="shutdown_timout: unknown option"):
        load(f, env={})
    with pytest.raises(ConfigError, match="not a int"):
        load(None, env={"FERRY_MAX_ATTEMPTS": "many"})


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERRY, *args], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60)


def test_database_unreachable_at_start_exits_with_a_clear_error() -> None:
    r = _run(["serve", "conductor"], {"FERRY_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/x",
                                      "FERRY_BUS_URL": "amqp://guest:guest@127.0.0.1:5672/"})
    assert r.returncode == 2
    assert "cannot reach the database at 127.0.0.1:1/x" in r.stderr
    assert "pw" not in r.stderr


def test_compute_refuses_database_credentials() -> None:
    r = _run(["serve", "compute"], {"FERRY_DATABASE_URL": "postgresql://db/x",
                                    "FERRY_BUS_URL": "amqp://mq/", "FERRY_HOST": "kvm1",
                                    "FERRY_DATA_ADDRESS": "127.0.0.1:0"})
    assert r.returncode == 2 and "must not hold database credentials" in r.stderr


def test_missing_settings_are_named() -> None:
    r = _run(["serve", "api"], {})
    assert r.returncode == 2
    assert "database_url (FERRY_DATABASE_URL)" in r.stderr and "FERRY_BUS_URL" in r.stderr
