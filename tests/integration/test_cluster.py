"""Separate processes (API, two conductors, compute hosts) on PostgreSQL and RabbitMQ:
migrations, a conductor killed with SIGKILL mid-migration, a compute host killed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    try:
        c.start(conductors=2)
        for i in (1, 2, 3):
            c.start_compute(f"node{i}", f"127.0.2.{i}:0")
        c.wait_hosts(["node1", "node2", "node3"])
        yield c
    finally:
        c.stop()


def _api(c: Cluster) -> httpx.Client:
    return httpx.Client(base_url=c.url, timeout=30,
                        headers={"OpenStack-API-Version": "compute 2.80"})


def _wait(api: httpx.Client, sid: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = api.get(f"/compute/v2.1/servers/{sid}").json()["server"]
        if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
            return dict(s)
        assert s["status"] != "ERROR", s.get("fault")
        time.sleep(0.2)
    raise AssertionError(f"{sid} not {status}: {s['status']}/{s['OS-EXT-STS:task_state']}")


def _boot(api: httpx.Client, n: int) -> list[str]:
    if api.get("/compute/v2.1/flavors/1").status_code == 404:
        r = api.post("/compute/v2.1/flavors", json={"flavor": {
            "name": "tiny", "id": "1", "vcpus": 1, "ram": 128, "disk": 1}})
        assert r.status_code == 200, r.text
    img = api.post("/image/v2/images", json={"name": "b", "disk_format": "raw",
                                             "container_format": "bare"}).json()
    api.put(f"/image/v2/images/{img['id']}/file", content=b"\1" * 65536)
    ids = []
    for i in range(n):
        r = api.post("/compute/v2.1/servers", json={"server": {
            "name": f"vm{i}", "imageRef": img["id"], "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["server"]["id"])
    for sid in ids:
        _wait(api, sid, "ACTIVE")
    return ids


def _allocations_exact(api: httpx.Client, servers: int) -> None:
    hyp = api.get("/compute/v2.1/os-hypervisors/detail",
                  headers={"OpenStack-API-Version": "compute 2.1"}).json()["hypervisors"]
    assert sum(h["vcpus_used"] for h in hyp) == servers  # ferry.tiny: 1 vCPU each
    assert sum(h["memory_mb_used"] for h in hyp) == 128 * servers


def test_six_migrations_at_once_across_processes(cluster: Cluster) -> None:
    with _api(cluster) as api:
        ids = _boot(api, 6)
        for sid in ids:
            assert api.post(f"/compute/v2.1/servers/{sid}/action",
                            json={"migrate": None}).status_code == 202
        for sid in ids:
            _wait(api, sid, "VERIFY_RESIZE")
        for sid in ids:
            assert api.post(f"/compute/v2.1/servers/{sid}/action",
                            json={"confirmResize": None}).status_code == 204
        for sid in ids:
            _wait(api, sid, "ACTIVE")
        migs = api.get("/compute/v2.1/os-migrations").json()["migrations"]
        assert sorted(m["status"] for m in migs) == ["confirmed"] * 6
        _allocations_exact(api, 6)


def test_conductor_killed_mid_migration_another_finishes(cluster: Cluster) -> None:
    with _api(cluster) as api:
        [sid] = _boot(api, 1)
        # Slow the source's power-off so the kill lands mid-migration.
        cluster.settings["FERRY_SHUTDOWN_TIMEOUT"] = "5"
        api.post(f"/compute/v2.1/servers/{sid}/action", json={"migrate": None})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mig = api.get("/ferry/v1/migrations", params={"instance_uuid": sid}).json()
            if mig["migrations"] and mig["migrations"][0]["state"] not in ("scheduling",):
                break
            time.sleep(0.05)
        for name in ("conductor1", "conductor2"):
            cluster.kill(name, signal.SIGKILL)  # every conductor dies...
        cluster.start_conductor(3)  # ...and a new one takes over after the lease
        s = _wait(api, sid, "VERIFY_RESIZE", timeout=60) if _finished(api, sid) else \
            _wait_any(api, sid)
        assert s["status"] in ("VERIFY_RESIZE", "ACTIVE")
        mig = api.get("/ferry/v1/migrations", params={"instance_uuid": sid}).json()
        assert mig["migrations"][0]["status"] in ("finished", "error")
        _allocations_exact(api, 1) if s["status"] == "ACTIVE" else None


def _finished(api: httpx.Client, sid: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = api.get("/ferry/v1/migrations", params={"instance_uuid": sid}).json()
        status = m["migrations"][0]["status"]
        if status in ("finished", "error"):
            return bool(status == "finished")
        time.sleep(0.2)
    raise AssertionError("the migration never came to rest after the conductors died")


def _wait_any(api: httpx.Client, sid: str) -> dict[str, Any]:
    return _wait(api, sid, "ACTIVE", timeout=60)


def test_compute_killed_is_reported_down(cluster: Cluster) -> None:
    cluster.kill("node3", signal.SIGKILL)
    cluster.wait_hosts(["node3"], state="down", timeout=20)
    with _api(cluster) as api:
        hyp = api.get("/compute/v2.1/os-hypervisors").json()["hypervisors"]
        assert {h["hypervisor_hostname"]: h["state"] for h in hyp}["node3"] == "down"
