"""Per-host base-image cache: `_base/<sha1(image id)>`, fetched from the image service.

A base is downloaded to a `.part` file, checked against the image's
`os_hash_value` (sha512, as Glance records it) and only then renamed into
place, so a torn download is never used as a backing file. Concurrent
requests for the same image on one host share one download.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from ferry.compute.instance_store import base_name


class ImageUnavailable(Exception):
    pass


class ImageCache:
    def __init__(self, base_dir: Path, image_endpoint: str,
                 headers: dict[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.endpoint = image_endpoint.rstrip("/")
        self.headers = headers or {}
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, image_id: str) -> Path:
        return self.base_dir / base_name(image_id)

    def has(self, image_id: str) -> bool:
        return self.path_for(image_id).exists()

    async def obtainable(self, image: dict[str, Any]) -> bool:
        """True when the base is cached or the image service can serve it."""
        if self.has(image["id"]):
            return True
        try:
            async with httpx.AsyncClient(timeout=30, headers=self.headers) as client:
                r = await client.get(f"{self.endpoint}/v2/images/{image['id']}")
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("status") == "active"

    async def ensure(self, image: dict[str, Any]) -> Path:
        image_id = image["id"]
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        async with lock:
            target = self.path_for(image_id)
            if target.exists():
                return target
            self.base_dir.mkdir(parents=True, exist_ok=True)
            part = target.with_suffix(".part")
            digest = hashlib.sha512()
            url = f"{self.endpoint}/v2/images/{image_id}/file"
            try:
                async with httpx.AsyncClient(timeout=None, headers=self.headers) as client, \
                        client.stream("GET", url) as r:
                    if r.status_code != 200:
                        raise ImageUnavailable(
                            f"image {image_id}: the image service answered {r.status_code}")
                    with open(part, "wb") as f:
                        async for chunk in r.aiter_bytes(1 << 20):
                            digest.update(chunk)
                            f.write(chunk)
                        f.flush()
                        os.fsync(f.fileno())
            except httpx.HTTPError as exc:
                part.unlink(missing_ok=True)
                raise ImageUnavailable(f"image {image_id}: {exc}") from exc
            expected = image.get("os_hash_value")
            if expected and digest.hexdigest() != expected:
                part.unlink(missing_ok=True)
                raise ImageUnavailable(f"image {image_id}: checksum mismatch after download")
            os.chmod(part, 0o444)
            os.rename(part, target)
            return target
