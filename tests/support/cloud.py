"""An embedded Ferry cloud, and a client that speaks to its API as a user would."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx

from ferry.cmd.embedded import CloudConfig, EmbeddedCloud
from ferry.conf import Settings


def fast_settings(**overrides: Any) -> Settings:
    s = Settings(shutdown_timeout=2, shutdown_retry_interval=0.5, report_interval=0.5,
                 service_down_time=5, periodic_interval=0.2, rollback_attempts=2,
                 retry_unit=0.01)
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


class Cloud:
    """The running cloud plus helpers that speak to it the way a client would."""

    def __init__(self, cloud: EmbeddedCloud, client: httpx.AsyncClient) -> None:
        self.cloud = cloud
        self.api = client

    async def upload_image(self, data: bytes = b"\x00" * 4096 + b"base" * 1024,
                           name: str = "base", fmt: str = "raw") -> str:
        r = await self.api.post("/image/v2/images", json={"name": name, "disk_format": fmt,
                                                          "container_format": "bare"})
        assert r.status_code == 201, r.text
        image_id: str = r.json()["id"]
        r = await self.api.put(f"/image/v2/images/{image_id}/file", content=data,
                               headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        return image_id

    async def boot(self, name: str = "vm", flavor: str = "1", image: str | None = None,
                   wait: str = "ACTIVE") -> dict[str, Any]:
        image = image or await self.upload_image()
        r = await self.api.post("/compute/v2.1/servers", json={"server": {
            "name": name, "imageRef": image, "flavorRef": flavor}})
        assert r.status_code == 202, r.text
        return await self.wait_status(r.json()["server"]["id"], wait)

    async def server(self, server_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/compute/v2.1/servers/{server_id}")
        assert r.status_code == 200, r.text
        server: dict[str, Any] = r.json()["server"]
        return server

    async def wait_status(self, server_id: str, status: str,
                          timeout: float = 30) -> dict[str, Any]:
        """tempest's waiter: status matches and task_state is None."""
        deadline = time.monotonic() + timeout
        while True:
            s = await self.server(server_id)
            if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
                return s
            if s["status"] == "ERROR" and status != "ERROR":
                raise AssertionError(f"server went ERROR: {s.get('fault')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timeout waiting for {status}: {s['status']} "
                                     f"{s['OS-EXT-STS:task_state']}")
            await asyncio.sleep(0.05)

    async def action(self, server_id: str, body: dict[str, Any],
                     version: str | None = None) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"compute {version}"} if version else {}
        return await self.api.post(f"/compute/v2.1/servers/{server_id}/action", json=body,
                                   headers=headers)

    async def migrations(self, server_id: str) -> list[dict[str, Any]]:
        r = await self.api.get("/ferry/v1/migrations", params={"instance_uuid": server_id})
        migs: list[dict[str, Any]] = r.json()["migrations"]
        return migs

    async def settle(self) -> None:
        await self.cloud.conductor.wait_idle()

    async def console(self, server_id: str) -> str:
        r = await self.action(server_id, {"os-getConsoleOutput": {"length": 50}})
        assert r.status_code == 200, r.text
        out: str = r.json()["output"]
        return out


async def start_cloud(tmp: Path, hosts: int = 2, driver: str = "fake",
                      **settings: Any) -> EmbeddedCloud:
    shared = settings.pop("shared_storage", False)
    cfg = CloudConfig(state_dir=tmp, hosts=hosts, driver=driver, listen_port=0,
                      insecure_no_auth=True, shared_storage=shared,
                      settings=fast_settings(**settings))
    cloud = EmbeddedCloud(cfg)
    await cloud.start()
    return cloud


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
