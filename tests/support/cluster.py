"""A Ferry cluster of separate processes on this machine: ferry-api, conductors and
compute hosts, on the real PostgreSQL and RabbitMQ (issue 5's deployment shape)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.postgres import BASE as PG_BASE
from tests.support.postgres import create_database, drop_database

AMQP = os.environ.get("FERRY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
FERRY = [sys.executable, "-m", "ferry.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    prefix: str = field(default_factory=lambda: f"ferry-it-{secrets.token_hex(3)}")
    db_url: str = ""
    api_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=lambda: {
        "FERRY_REPORT_INTERVAL": "1", "FERRY_SERVICE_DOWN_TIME": "6",
        "FERRY_CONDUCTOR_LEASE_SECONDS": "3", "FERRY_LEASE_RENEW_INTERVAL": "1",
        "FERRY_PERIODIC_INTERVAL": "0.5", "FERRY_SHUTDOWN_TIMEOUT": "5",
        "FERRY_SHUTDOWN_RETRY_INTERVAL": "1",
        # Slow transfers then take several send_disks asks over the real broker.
        "FERRY_TRANSFER_POLL_S": "1"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        env.update(self.settings)
        env.update({"FERRY_BUS_URL": AMQP, "FERRY_BUS_PREFIX": self.prefix})
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str],
               wrap: list[str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen([*(wrap or []), *FERRY, *args], env=env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.root)

    def start(self, conductors: int = 2) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_url = create_database()
        self.api_port = free_port()
        db = {"FERRY_DATABASE_URL": self.db_url}
        self._spawn("api", ["serve", "api"], self._env(
            **db, FERRY_API_LISTEN=f"127.0.0.1:{self.api_port}",
            FERRY_IMAGE_DIR=str(self.root / "images"), FERRY_API_INSECURE_NO_AUTH="1"))
        for i in range(1, conductors + 1):
            self.start_conductor(i)
        self.wait_api()

    def start_conductor(self, i: int) -> None:
        self._spawn(f"conductor{i}", ["serve", "conductor"], self._env(
            FERRY_DATABASE_URL=self.db_url, FERRY_CONDUCTOR_NAME=f"conductor{i}"))

    def start_compute(self, name: str, data_address: str, driver: str = "fake",
                      wrap: list[str] | None = None) -> None:
        self._spawn(name, ["serve", "compute"], self._env(
            FERRY_HOST=name, FERRY_DATA_ADDRESS=data_address, FERRY_DRIVER=driver,
            FERRY_INSTANCES_PATH=str(self.root / name / "instances"),
            FERRY_IMAGE_ENDPOINT=f"{self.url}/image"), wrap=wrap)

    def start_compute_env(self, name: str, data_address: str, *, driver: str = "fake",
                          wrap: list[str] | None = None, **env: str) -> None:
        """start_compute with environment overrides, e.g. a compute host in a network
        namespace reaching the broker and the image API through a forwarder:
        FERRY_BUS_URL=..., FERRY_IMAGE_ENDPOINT=..."""
        base = {"FERRY_HOST": name, "FERRY_DATA_ADDRESS": data_address, "FERRY_DRIVER": driver,
                "FERRY_INSTANCES_PATH": str(self.root / name / "instances"),
                "FERRY_IMAGE_ENDPOINT": f"{self.url}/image"}
        self._spawn(name, ["serve", "compute"], self._env(**{**base, **env}), wrap=wrap)

    def send_signal(self, name: str, sig: int) -> None:
        """Send `sig` to a running service (SIGSTOP/SIGCONT to freeze and thaw it)."""
        self.procs[name].send_signal(sig)

    def wait_api(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/compute/v2.1", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the API did not come up")

    def wait_hosts(self, names: list[str], state: str = "up", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.url}/compute/v2.1/os-services", timeout=5)
            states = {s["host"]: s["state"] for s in r.json()["services"]}
            if all(states.get(n) == state for n in names):
                return
            time.sleep(0.3)
        raise TimeoutError(f"hosts {names} not {state}: {states}")

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None and not name.startswith("dead-"):
                raise RuntimeError(f"{name} exited with {p.returncode}: "
                                   f"{(self.root / f'{name}.log').read_text()[-2000:]}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        p.send_signal(sig)
        p.wait(timeout=30)
        self.procs[f"dead-{name}-{time.monotonic_ns()}"] = p

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.db_url:
            drop_database(self.db_url)


__all__ = ["PG_BASE", "Cluster", "free_port"]
