"""`ferry up` as a separate process, the way an operator starts it, and the
client environment that points openstackclient/openstacksdk/tempest at it.

`start()` waits until the API answers and `<state-dir>/clouds.yaml` exists;
`stop()` sends Ctrl-C (SIGINT) and waits, then kills if it must.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FerryProcess:
    state_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None  # None: a Ferry someone else runs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def cloud(self) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(self.clouds_yaml.read_text())
        cloud: dict[str, Any] = data["clouds"]["ferry"]
        return cloud

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.clouds_yaml), OS_CLOUD="ferry")
        return env

    def log(self) -> str:
        path = self.state_dir.parent / "ferry-up.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(state_dir: Path, hosts: int = 2, timeout: float = 90,
          extra: tuple[str, ...] = ()) -> FerryProcess:
    port = free_port()
    log = open(state_dir.parent / "ferry-up.log", "wb")  # noqa: SIM115 (kept by the child)
    proc = subprocess.Popen(
        [str(BIN / "ferry"), "up", "--driver", "fake", "--hosts", str(hosts),
         "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{port}", *extra],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    fp = FerryProcess(state_dir, port, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ferry up exited with {proc.returncode}:\n{fp.log()}")
        try:
            ready = httpx.get(f"{fp.url}/identity/v3", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and fp.clouds_yaml.exists() and _hosts_up(fp, hosts):
            return fp
        time.sleep(0.3)
    fp.stop()
    raise TimeoutError(f"ferry up did not become ready:\n{fp.log()}")


def admin_token(fp: FerryProcess) -> str:
    auth = fp.cloud()["auth"]
    r = httpx.post(f"{auth['auth_url']}/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": auth["username"], "domain": {"name": auth["user_domain_name"]},
            "password": auth["password"]}}},
        "scope": {"project": {"name": auth["project_name"],
                              "domain": {"name": auth["project_domain_name"]}}}}})
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def _hosts_up(fp: FerryProcess, hosts: int) -> bool:
    try:
        r = httpx.get(f"{fp.url}/compute/v2.1/os-services",
                      headers={"X-Auth-Token": admin_token(fp)}, timeout=5)
    except (httpx.HTTPError, KeyError, OSError):
        return False
    return r.status_code == 200 and sum(
        s["state"] == "up" for s in r.json()["services"]) >= hosts


def upload_public_image(fp: FerryProcess, name: str, data: bytes) -> str:
    h = {"X-Auth-Token": admin_token(fp)}
    r = httpx.post(f"{fp.url}/image/v2/images", headers=h, json={
        "name": name, "disk_format": "raw", "container_format": "bare",
        "visibility": "public"})
    r.raise_for_status()
    image_id: str = r.json()["id"]
    r = httpx.put(f"{fp.url}/image/v2/images/{image_id}/file", content=data,
                  headers={**h, "Content-Type": "application/octet-stream"})
    r.raise_for_status()
    return image_id
