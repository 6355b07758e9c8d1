"""Functional tests: the whole control plane in one process, fake driver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from ferry.cmd.background import CloudThread
from ferry.cmd.embedded import CloudConfig
from tests.support.cloud import Cloud, fast_settings, start_cloud


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    ec = await start_cloud(tmp_path / "state")
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
        yield Cloud(ec, client)
    await ec.stop()


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A cloud running in a thread, with FERRY_URL pointing at it: for the CLI
    tests, which call the synchronous `ferry` commands as a user types them."""
    thread = CloudThread(CloudConfig(state_dir=tmp_path / "s", hosts=2, driver="fake",
                                     listen_port=0, insecure_no_auth=True,
                                     settings=fast_settings()))
    cloud = thread.start()
    monkeypatch.setenv("FERRY_URL", cloud.url)
    monkeypatch.setenv("COLUMNS", "200")
    yield cloud.url
    thread.stop()
