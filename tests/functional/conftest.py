"""Functional tests: the whole control plane in one process, fake driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.cloud import Cloud, start_cloud


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    ec = await start_cloud(tmp_path / "state")
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
        yield Cloud(ec, client)
    await ec.stop()
