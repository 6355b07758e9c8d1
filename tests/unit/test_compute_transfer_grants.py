"""The destination's side of a resumable transfer (ComputeManager.expect_transfer):
the same token keeps the grant and the partial files, across an agent restart
too (grants persisted in the host's state dir); a new token clears what another
migration left; a completed grant reports "complete" instead of starting over."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.bus.memory import MemoryBus
from ferry.compute.manager import GRANTS_FILE, ComputeManager
from ferry.compute.virt.fake import FakeDriver
from ferry.image.cache import ImageCache
from ferry.transfer import new_token

INSTANCE = "8c1d7e4a-7f0e-4a43-9d8e-2b7d0f5a6c11"
FILES = {"disk": 1 << 20}


def _manager(tmp: Path) -> ComputeManager:
    instances = tmp / "instances"
    return ComputeManager("host2", FakeDriver("host2", instances), MemoryBus(),
                          ImageCache(instances / "_base", "http://127.0.0.1:9/image"),
                          "127.0.0.1", state_dir=tmp / "state")


def _partials(mgr: ComputeManager) -> Path:
    target = mgr.store.path(INSTANCE)
    target.mkdir(parents=True, exist_ok=True)
    (target / "disk.part").write_bytes(b"half a disk")
    (target / "disk.journal").write_bytes(b"records")
    return target


async def test_same_token_keeps_partials_across_an_agent_restart(tmp_path: Path) -> None:
    token = new_token()
    mgr = _manager(tmp_path)
    assert await mgr.expect_transfer(token, "mig-1", INSTANCE, FILES) == {"grant": "new"}
    target = _partials(mgr)
    # The conductor resumed its step: same token, nothing removed.
    assert await mgr.expect_transfer(token, "mig-1", INSTANCE, FILES) == {"grant": "resumed"}
    assert (target / "disk.part").exists() and (target / "disk.journal").exists()
    # The agent restarts: a new manager reads the grant back from its state dir.
    again = _manager(tmp_path)
    assert (tmp_path / "state" / GRANTS_FILE).exists()
    assert [g.migration_uuid for g in again.tokens.pending()] == ["mig-1"]
    assert again.tokens.open(token, "mig-1").directory == target
    assert await again.expect_transfer(token, "mig-1", INSTANCE, FILES) == {"grant": "resumed"}
    assert (target / "disk.part").read_bytes() == b"half a disk"


async def test_new_token_clears_leftovers_of_another_migration(tmp_path: Path) -> None:
    mgr = _manager(tmp_path)
    target = _partials(mgr)
    (target / "sub").mkdir()
    (target / "sub" / "x").write_bytes(b"x")
    assert await mgr.expect_transfer(new_token(), "mig-2", INSTANCE, FILES) == {"grant": "new"}
    assert target.is_dir() and list(target.iterdir()) == []


async def test_a_source_copy_beside_it_is_never_cleared(tmp_path: Path) -> None:
    """Shared storage: <uuid> is next to the source's <uuid>_resize; leave it."""
    mgr = _manager(tmp_path)
    target = _partials(mgr)
    mgr.store.resize_path(INSTANCE).mkdir()
    await mgr.expect_transfer(new_token(), "mig-3", INSTANCE, FILES)
    assert (target / "disk.part").exists()


async def test_completed_grant_reports_complete_or_missing_files(tmp_path: Path) -> None:
    token = new_token()
    mgr = _manager(tmp_path)
    await mgr.expect_transfer(token, "mig-4", INSTANCE, FILES)
    mgr.tokens.complete(token)
    target = mgr.store.path(INSTANCE)
    target.mkdir(parents=True)
    with pytest.raises(RuntimeError, match="gone"):
        await mgr.expect_transfer(token, "mig-4", INSTANCE, FILES)
    (target / "disk").write_bytes(b"verified")
    assert await mgr.expect_transfer(token, "mig-4", INSTANCE, FILES) == {"grant": "complete"}


async def test_an_expired_grant_of_the_same_token_is_renewed(tmp_path: Path) -> None:
    token = new_token()
    mgr = _manager(tmp_path)
    await mgr.expect_transfer(token, "mig-5", INSTANCE, FILES, ttl=-1)
    assert mgr.tokens.state(token) == "expired"
    assert await mgr.expect_transfer(token, "mig-5", INSTANCE, FILES) == {"grant": "resumed"}
    assert mgr.tokens.state(token) == "active"
