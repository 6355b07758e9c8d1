"""Transfers that break in the middle resume from the receiver's journal."""

from __future__ import annotations

import asyncio
import filecmp
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ferry.transfer import (
    TokenRegistry,
    TransferError,
    TransferRefused,
    TransferServer,
    TransientTransferError,
    send_files,
    sparse_digest,
)
from ferry.transfer import wire as wire_module

from .test_transfer_helpers import MiB, Relay, grant, make_sparse, wait_for

SIZE = 256 * MiB
DATA = 48 * MiB
RETRY = {"attempts": 8, "backoff": 0.05, "max_backoff": 0.2}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    writes = [(i * 16 * MiB + 12288, os.urandom(4 * MiB)) for i in range(12)]  # 48 MiB
    make_sparse(d / "disk", SIZE, writes)
    make_sparse(d / "disk.config", 100_000, [(0, os.urandom(100_000))])
    return d


def _sizes(src: Path) -> dict[str, int]:
    return {n: (src / n).stat().st_size for n in ("disk", "disk.config")}


def _identical(src: Path, dst: Path) -> None:
    for name in ("disk", "disk.config"):
        assert filecmp.cmp(src / name, dst / name, shallow=False)
        assert sparse_digest(src / name) == sparse_digest(dst / name)
    assert sorted(os.listdir(dst)) == ["disk", "disk.config"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TransferServer]:
    srv = TransferServer("127.0.0.1", 0, TokenRegistry(path=tmp_path / "grants.json"))
    await srv.start()
    yield srv
    await srv.stop()


async def test_connection_cut_mid_stream_resumes(
    tmp_path: Path, src: Path, server: TransferServer
) -> None:
    relay = Relay(server.address, cut_after=DATA // 2)
    address = await relay.start()
    dst = tmp_path / "dst"
    token = grant(server.registry, dst, _sizes(src))
    try:
        result = await send_files(
            address, token, "mig-1", src, ["disk", "disk.config"], chunk_size=MiB, **RETRY
        )
    finally:
        await relay.stop()
    assert relay.cuts == 1 and result.attempts == 2
    assert result.resumed_bytes > DATA // 4  # the second attempt skipped what was there
    allocated = sum(f.allocated_bytes for f in result.files.values())
    assert result.bytes_sent <= 1.1 * allocated
    assert relay.up <= 1.1 * allocated + 2 * MiB
    _identical(src, dst)


async def test_receiver_restarted_mid_stream_resumes_from_its_journal(
    tmp_path: Path, src: Path
) -> None:
    state = tmp_path / "grants.json"
    first = TransferServer("127.0.0.1", 0, TokenRegistry(path=state))
    await first.start()
    port = first.port
    dst = tmp_path / "dst"
    token = grant(first.registry, dst, _sizes(src))
    restarted: list[TransferServer] = []

    async def restart() -> None:
        await first.stop()
        await asyncio.sleep(0.1)  # the sender sees refused connections meanwhile
        # A new process would build its registry from the same file.
        second = TransferServer("127.0.0.1", port, TokenRegistry(path=state))
        await second.start()
        restarted.append(second)

    tasks: list[asyncio.Task[None]] = []

    def progress(done: int, total: int) -> None:
        if not tasks and done >= total // 2:
            tasks.append(asyncio.get_running_loop().create_task(restart()))

    try:
        result = await send_files(
            first.address,
            token,
            "mig-1",
            src,
            ["disk", "disk.config"],
            progress,
            chunk_size=MiB,
            rate_limit=120 * MiB,
            progress_interval=0.02,
            **RETRY,
        )
    finally:
        for s in restarted:
            await s.stop()
        await first.stop()
    assert result.attempts >= 2 and restarted
    allocated = sum(f.allocated_bytes for f in result.files.values())
    assert result.bytes_sent <= 1.1 * allocated
    _identical(src, dst)
    # A completed transfer's token is dead, also in the persisted registry.
    assert not TokenRegistry(path=state).is_active(token)


async def test_unsynced_journal_is_trusted_only_after_reverification(
    tmp_path: Path, src: Path, server: TransferServer
) -> None:
    """Data the journal claims but the disk lost (host crash) is sent again."""
    relay = Relay(server.address, cut_after=DATA // 2)
    address = await relay.start()
    dst = tmp_path / "dst"
    token = grant(server.registry, dst, _sizes(src))
    with pytest.raises(TransientTransferError):
        await send_files(
            address, token, "mig-1", src, ["disk", "disk.config"], chunk_size=MiB, attempts=1
        )
    await relay.stop()
    await wait_for(lambda: all(s.closed for s in server._sessions.values()))
    # As if the receiver had died before syncing: drop the sync marker(s)...
    journal = dst / "disk.journal"
    records = journal.read_bytes()
    while records[-32:-24] == b"\xff" * 8:
        records = records[:-32]
    journal.write_bytes(records)
    # ...and as if the first data region's pages had never reached the disk.
    with open(dst / "disk.part", "r+b") as f:
        f.seek(12288 + 100)
        f.write(b"\x00" * 4096)
    result = await send_files(
        server.address, token, "mig-1", src, ["disk", "disk.config"], chunk_size=MiB
    )
    assert result.resumed_bytes > 0
    _identical(src, dst)


async def test_another_migration_cannot_resume_with_the_token(
    tmp_path: Path, src: Path, server: TransferServer
) -> None:
    relay = Relay(server.address, cut_after=DATA // 2)
    address = await relay.start()
    dst = tmp_path / "dst"
    token = grant(server.registry, dst, _sizes(src))
    with pytest.raises(TransientTransferError):
        await send_files(
            address, token, "mig-1", src, ["disk", "disk.config"], chunk_size=MiB, attempts=1
        )
    await relay.stop()
    with pytest.raises(TransferRefused, match="another migration"):
        await send_files(server.address, token, "mig-2", src, ["disk", "disk.config"])
    assert "disk.part" in os.listdir(dst)  # untouched, still resumable by mig-1
    await send_files(server.address, token, "mig-1", src, ["disk", "disk.config"], chunk_size=MiB)
    _identical(src, dst)


async def test_gives_up_after_the_deadline(tmp_path: Path, src: Path) -> None:
    started = time.monotonic()
    with pytest.raises(TransferError, match=r"127\.0\.0\.1:1"):
        await send_files(
            ("127.0.0.1", 1), "t", "m", src, ["disk"], deadline=0.5, backoff=0.1, attempts=100
        )
    assert time.monotonic() - started < 2


async def test_expired_grant_partials_are_swept(
    tmp_path: Path, src: Path, server: TransferServer
) -> None:
    relay = Relay(server.address, cut_after=DATA // 2)
    address = await relay.start()
    dst = tmp_path / "dst"
    clock = [time.time()]
    server.registry.clock = lambda: clock[0]
    token = grant(server.registry, dst, _sizes(src), ttl=30)
    with pytest.raises(TransientTransferError):
        await send_files(address, token, "mig-1", src, ["disk", "disk.config"], attempts=1)
    await relay.stop()
    await wait_for(lambda: all(s.closed for s in server._sessions.values()))
    assert "disk.part" in os.listdir(dst)
    clock[0] += 60
    server._sweep()
    assert os.listdir(dst) == []


async def test_corrupted_chunk_on_the_wire_is_sent_again(
    tmp_path: Path, src: Path, server: TransferServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = wire_module.Wire.send
    payloads = 0

    def flaky(self: wire_module.Wire, data: bytes | bytearray | memoryview) -> None:
        nonlocal payloads
        if len(data) >= 65536:
            payloads += 1
            if payloads == 3:  # the link flips a bit in the third chunk's payload
                bad = bytearray(data)
                bad[len(bad) // 2] ^= 0x10
                data = bad
        real(self, data)

    monkeypatch.setattr(wire_module.Wire, "send", flaky)
    dst = tmp_path / "dst"
    token = grant(server.registry, dst, _sizes(src))
    result = await send_files(
        server.address, token, "mig-1", src, ["disk", "disk.config"], chunk_size=MiB, streams=1
    )
    assert result.chunks_resent == 1 and result.attempts == 1
    _identical(src, dst)
