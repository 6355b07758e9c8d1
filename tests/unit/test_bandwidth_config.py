"""Bandwidth settings: bytes/s as numbers or with units, in TOML and in the
environment; a bad value is a clear configuration error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.cmd.config import ConfigError, compute_state_dir, load, parse_bandwidth


@pytest.mark.parametrize(("text", "rate"), [
    (52428800, 52428800), ("50M", 50_000_000), ("50Mi", 50 * 2**20), ("50MB/s", 50_000_000),
    ("1.5k", 1500), ("2G", 2 * 10**9), ("1Gi", 2**30), (" 10 ", 10), (0, 0), ("0", 0),
])
def test_bandwidth_values(text: object, rate: int) -> None:
    assert parse_bandwidth(text) == rate


@pytest.mark.parametrize("text", ["-1", "fast", "5X", "nan", "inf", "", True, "M"])
def test_bad_bandwidth_values(text: object) -> None:
    with pytest.raises(ValueError):
        parse_bandwidth(text)


def test_bandwidth_settings_from_toml_and_env(tmp_path: Path) -> None:
    conf = tmp_path / "ferry.toml"
    conf.write_text('[settings]\ntransfer_max_bandwidth = "100M"\nhost_max_bandwidth = 5000\n'
                    'transfer_give_up_s = 30\n')
    cfg = load(conf, env={"FERRY_HOST_MAX_BANDWIDTH": "1Gi"})
    assert cfg.settings.transfer_max_bandwidth == 100_000_000
    assert cfg.settings.host_max_bandwidth == 2**30
    assert cfg.settings.transfer_give_up_s == 30
    conf.write_text('[settings]\ntransfer_max_bandwidth = "lots"\n')
    with pytest.raises(ConfigError, match="transfer_max_bandwidth"):
        load(conf, env={})


def test_compute_state_dir_is_per_host_by_default(tmp_path: Path) -> None:
    cfg = load(None, env={"FERRY_HOST": "kvm17",
                          "FERRY_INSTANCES_PATH": str(tmp_path / "instances")})
    assert compute_state_dir(cfg) == tmp_path / "state" / "kvm17"
    cfg = load(None, env={"FERRY_HOST": "kvm17", "FERRY_STATE_DIR": str(tmp_path / "s")})
    assert compute_state_dir(cfg) == tmp_path / "s"
