"""Service configuration: one TOML file, with environment overrides.

```toml
[database]
url = "postgresql://ferry@db.example/ferry"     # FERRY_DATABASE_URL
[bus]
url = "amqp://ferry:secret@mq.example:5672/"     # FERRY_BUS_URL
prefix = "ferry"                                 # FERRY_BUS_PREFIX (queue names)
[api]
listen = "0.0.0.0:8774"                          # FERRY_API_LISTEN
service_token = "<random, shared with computes>" # FERRY_SERVICE_TOKEN (image reads only)
image_dir = "/var/lib/ferry/images"
[conductor]
name = "conductor@ctl1"                          # FERRY_CONDUCTOR_NAME
[compute]
host = "kvm17"                                   # FERRY_HOST
data_address = "10.0.0.17:7480"                  # FERRY_DATA_ADDRESS
instances_path = "/var/lib/ferry/instances"      # FERRY_INSTANCES_PATH
state_dir = "/var/lib/ferry/state/kvm17"         # FERRY_STATE_DIR (grants kept on restart)
driver = "libvirt"                               # FERRY_DRIVER
image_endpoint = "http://api.example:8774/image" # FERRY_IMAGE_ENDPOINT
zone = "nova"
[settings]                                       # any field of ferry.conf.Settings
shutdown_timeout = 60                            # FERRY_SHUTDOWN_TIMEOUT, ...
transfer_give_up_s = 600                         # a transfer retries this long, then rolls back
transfer_max_bandwidth = "100M"                  # default cap per migration (bytes/s)
host_max_bandwidth = "1G"                        # this host's total send / receive cap
```

Bandwidths are bytes/s: a number, or a number with a suffix K, M, G, T
(powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024), optionally followed by
"B" or "B/s" (see :func:`parse_bandwidth`); 0 means no cap.

To add an option: add the field to the dataclass below (or to Settings) and
it is read from the file and from FERRY_<NAME> automatically.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.conf import Settings


class ConfigError(Exception):
    pass


@dataclass
class ServiceConfig:
    database_url: str = ""
    bus_url: str = ""
    bus_prefix: str = "ferry"
    api_listen: str = "127.0.0.1:8774"
    # Development only (loopback): every request is admin, like Nova's noauth2.
    api_insecure_no_auth: bool = False
    # Shared by the API and compute hosts; accepted for image reads only.
    service_token: str = ""
    token_ttl: float = 3600.0
    image_dir: str = "/var/lib/ferry/images"
    conductor_name: str = ""
    host: str = ""
    data_address: str = ""
    instances_path: str = "/var/lib/ferry/instances"
    # What a compute host keeps across restarts (transfer-grants.json), so a
    # transfer cut by an agent restart resumes. Empty: <instances_path>/../state/<host>,
    # its own even when the instances path is shared.
    state_dir: str = ""
    driver: str = "libvirt"
    image_endpoint: str = "http://127.0.0.1:8774/image"
    zone: str = "nova"
    settings: Settings = field(default_factory=Settings)


# TOML (section, key) -> ServiceConfig field
_KEYS = {
    ("database", "url"): "database_url", ("bus", "url"): "bus_url",
    ("bus", "prefix"): "bus_prefix",
    ("api", "listen"): "api_listen", ("api", "image_dir"): "image_dir",
    ("api", "insecure_no_auth"): "api_insecure_no_auth",
    ("api", "service_token"): "service_token", ("compute", "service_token"): "service_token",
    ("api", "token_ttl"): "token_ttl",
    ("conductor", "name"): "conductor_name", ("compute", "host"): "host",
    ("compute", "data_address"): "data_address",
    ("compute", "instances_path"): "instances_path", ("compute", "driver"): "driver",
    ("compute", "state_dir"): "state_dir",
    ("compute", "image_endpoint"): "image_endpoint", ("compute", "zone"): "zone",
}


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_bandwidth(value: Any) -> int:
    """Bytes/s from 52428800, "50M" (50*10**6), "50Mi" (50*2**20), "50MB/s", ...

    Raises ValueError for anything else, negative values included.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a bandwidth")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        text = str(value).strip().upper().removesuffix("/S").removesuffix("B").strip()
        digits = text.rstrip("KMGTI")
        number, unit = float(digits), text[len(digits):]
        if unit not in _UNITS:
            raise ValueError(f"{value!r}: unknown unit {unit!r}")
    rate = number * _UNITS[unit]
    if not rate >= 0 or rate == float("inf"):
        raise ValueError(f"{value!r} is not a bandwidth (bytes/s >= 0)")
    return int(rate)


def _coerce(value: Any, like: Any, name: str) -> Any:
    if name.lower().rstrip("_").endswith("bandwidth"):
        try:
            return float(parse_bandwidth(value))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if isinstance(like, bool):
        return str(value).lower() in ("1", "true", "yes", "on") if isinstance(value, str) \
            else bool(value)
    try:
        return type(like)(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a {type(like).__name__}") from None


def load(path: Path | None, env: dict[str, str] | None = None) -> ServiceConfig:
    env = dict(os.environ if env is None else env)
    cfg = ServiceConfig()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for (section, key), attr in _KEYS.items():
        like = getattr(cfg, attr)
        if key in data.get(section, {}):
            setattr(cfg, attr, _coerce(data[section][key], like, f"[{section}] {key}"))
        env_name = f"FERRY_{attr.upper()}"
        if env_name in env:
            setattr(cfg, attr, _coerce(env[env_name], like, env_name))
    known = {f.name: f for f in dataclasses.fields(Settings)}
    for key, value in data.get("settings", {}).items():
        if key not in known:
            raise ConfigError(f"[settings] {key}: unknown option")
        setattr(cfg.settings, key, _coerce(value, getattr(cfg.settings, key), key))
    for key in known:
        env_name = f"FERRY_{key.upper()}"
        if env_name in env:
            setattr(cfg.settings, key, _coerce(env[env_name], getattr(cfg.settings, key),
                                               env_name))
    return cfg


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def compute_state_dir(cfg: ServiceConfig) -> Path:
    return Path(cfg.state_dir) if cfg.state_dir else \
        Path(cfg.instances_path).parent / "state" / cfg.host


def require(cfg: ServiceConfig, *names: str) -> None:
    missing = [n for n in names if not getattr(cfg, n)]
    if missing:
        raise ConfigError("missing: " + ", ".join(
            f"{n} (FERRY_{n.upper()})" for n in missing))
