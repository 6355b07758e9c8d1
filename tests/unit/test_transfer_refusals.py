"""Everything the receiver must refuse, and proof that nothing was written."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ferry.transfer import (
    TokenRegistry,
    TransferError,
    TransferGrant,
    TransferRefused,
    TransferServer,
    new_token,
    send_files,
    sparse_digest,
)
from ferry.transfer import session as session_module
from ferry.transfer import sink as sink_module
from ferry.transfer.digest import finish_digest
from ferry.transfer.protocol import (
    ACK_OK,
    ACK_RESEND,
    KIND_ACCEPT,
    KIND_RESULT,
    PROTO,
    ChunkHeader,
    chunk_prefix,
)

from .test_transfer_helpers import (
    CHUNK,
    MiB,
    RawPeer,
    chunk_sum,
    grant,
    make_sparse,
    tree,
    wait_for,
)

FAST = {"attempts": 2, "backoff": 0.01}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    make_sparse(d / "disk", 16 * MiB, [(MiB, os.urandom(2 * MiB)), (9 * MiB, os.urandom(MiB))])
    return d


def _nothing_written(tmp_path: Path, dst: Path) -> None:
    assert not dst.exists() or list(dst.iterdir()) == []
    assert tree(tmp_path) <= {"src", "src/disk", "dst"}


async def test_wrong_token(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    grant(registry, dst, {"disk": 16 * MiB})
    with pytest.raises(TransferRefused, match="unknown transfer token"):
        await send_files(server.address, new_token(), "mig-1", src, ["disk"])
    _nothing_written(tmp_path, dst)


async def test_completed_token_is_dead(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB})
    await send_files(server.address, token, "mig-1", src, ["disk"])
    before = os.stat(dst / "disk")
    with pytest.raises(TransferRefused, match="already used"):
        await send_files(server.address, token, "mig-1", src, ["disk"])
    after = os.stat(dst / "disk")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(os.listdir(dst)) == ["disk"]


async def test_expired_token(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB}, ttl=-1)
    with pytest.raises(TransferRefused, match="expired"):
        await send_files(server.address, token, "mig-1", src, ["disk"])
    _nothing_written(tmp_path, dst)


async def test_token_for_another_migration(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB}, migration_uuid="mig-1")
    with pytest.raises(TransferRefused, match="another migration"):
        await send_files(server.address, token, "mig-2", src, ["disk"])
    _nothing_written(tmp_path, dst)
    # Presenting it for the wrong migration did not burn it.
    await send_files(server.address, token, "mig-1", src, ["disk"])
    assert sparse_digest(dst / "disk") == sparse_digest(src / "disk")


async def test_name_not_in_grant_and_size_mismatch(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    make_sparse(src / "other", 10)
    token = grant(registry, dst, {"disk": 16 * MiB})
    with pytest.raises(TransferRefused, match="not in the grant"):
        await send_files(server.address, token, "mig-1", src, ["disk", "other"])
    token = grant(registry, dst, {"disk": 16 * MiB + 1})
    with pytest.raises(TransferRefused, match="does not match the granted size"):
        await send_files(server.address, token, "mig-1", src, ["disk"])
    token = grant(registry, dst, {"disk": 16 * MiB, "disk.config": 10})
    with pytest.raises(TransferRefused, match="missing from the manifest"):
        await send_files(server.address, token, "mig-1", src, ["disk"])
    (src / "other").unlink()
    _nothing_written(tmp_path, dst)


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/passwd", "a/b", ".hidden", "ABS", "x\0y", "..", "disk.part", "d.journal"],
)
async def test_unsafe_names_refused_by_receiver(
    name: str, tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    if name == "ABS":
        name = str(tmp_path / "abs-target")
    dst = tmp_path / "dst"
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    token = grant(registry, dst, {"disk": 10})
    peer = await RawPeer.connect(server.address)
    kind, result = await peer.header_json(
        {
            "proto": PROTO,
            "role": "control",
            "token": token,
            "migration_uuid": "mig-1",
            "files": [{"name": name, "size": 10, "allocated": 0}],
            "chunk_size": CHUNK,
            "streams": 1,
            "compression": [],
        }
    )
    await peer.close()
    assert kind == KIND_RESULT and result["ok"] is False
    assert "file name" in result["error"]
    assert not dst.exists()
    assert tree(tmp_path) == set()
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd


async def test_sender_validates_names_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(TransferRefused, match="file name"):
        await send_files(("127.0.0.1", 9), new_token(), "m", tmp_path, ["../x"])


async def _accepted(
    server: TransferServer, registry: TokenRegistry, dst: Path, files: dict[str, int]
) -> RawPeer:
    token = grant(registry, dst, files)
    peer = await RawPeer.connect(server.address)
    kind, _ = await peer.header(token, "mig-1", [{"name": n, "size": s} for n, s in files.items()])
    assert kind == KIND_ACCEPT
    return peer


def _claim(size: int, pieces: list[tuple[int, bytes]]) -> dict[str, Any]:
    """The finish-frame entry of a file holding ``pieces`` (one per segment,
    each at the start of its segment)."""
    total = nbytes = 0
    for offset, data in pieces:
        total += chunk_sum(offset, min(CHUNK, size - offset), 0, data)
        nbytes += len(data)
    return {
        "segments": len(pieces),
        "bytes": nbytes,
        "digest": finish_digest(size, total & ((1 << 128) - 1)),
    }


async def test_corrupted_chunk_is_asked_again_and_never_written(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(MiB)
    peer = await _accepted(server, registry, dst, {"disk": 2 * CHUNK})
    await peer.chunk(1, data, corrupt=True)
    assert await peer.ack() == (0, 1, ACK_RESEND)
    with open(dst / "disk.part", "rb") as f:  # nothing of the bad chunk landed
        f.seek(CHUNK)
        assert f.read(MiB) == bytes(MiB)
    await peer.chunk(1, data)
    assert await peer.ack() == (0, 1, ACK_OK)
    await peer.finish({"disk": _claim(2 * CHUNK, [(CHUNK, data)])})
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is True
    with open(dst / "disk", "rb") as f:
        f.seek(CHUNK)
        assert f.read(MiB) == data


async def test_digest_mismatch(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(MiB)
    peer = await _accepted(server, registry, dst, {"disk": 4 * MiB})
    await peer.chunk(0, data)
    assert await peer.ack() == (0, 0, ACK_OK)
    claim = _claim(4 * MiB, [(0, data)])
    await peer.finish({"disk": {**claim, "digest": "0" * 32}})
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "digest mismatch" in result["error"]
    await wait_for(lambda: list(dst.iterdir()) == [])


async def test_byte_count_mismatch(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(65536)
    peer = await _accepted(server, registry, dst, {"disk": 4 * 65536})
    await peer.chunk(0, data)
    assert await peer.ack() == (0, 0, ACK_OK)
    claim = _claim(4 * 65536, [(0, data)])
    await peer.finish({"disk": {**claim, "bytes": 999}})
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "sent 999 bytes" in result["error"]
    await wait_for(lambda: list(dst.iterdir()) == [])


async def test_out_of_range_and_overlapping_runs(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    peer = await _accepted(server, registry, dst, {"disk": 4096})
    await peer.chunk(0, b"x" * 200, rel=4000, seg_len=4096)
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "out of range" in result["error"]
    peer = await _accepted(server, registry, dst, {"disk": 2 * CHUNK})
    await peer.chunk(5, b"x" * 10)  # a segment past the end of the file
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "past the end" in result["error"]
    await wait_for(lambda: list(dst.iterdir()) == [])


async def test_all_or_nothing_across_files(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(5000)
    peer = await _accepted(server, registry, dst, {"a": 8192, "b": 8192})
    await peer.chunk(0, data, file=0, seg_len=8192)
    await peer.chunk(0, data, file=1, seg_len=8192)
    assert await peer.ack() == (0, 0, ACK_OK)
    assert await peer.ack() == (1, 0, ACK_OK)
    good = _claim(8192, [(0, data)])
    await peer.finish({"a": good, "b": {**good, "digest": "f" * 32}})
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "b: digest mismatch" in result["error"]
    # "a" was complete and verified, but the grant is all-or-nothing.
    await wait_for(lambda: list(dst.iterdir()) == [])


async def test_disk_full_fails_cleanly_and_removes_partials(
    tmp_path: Path,
    src: Path,
    server: TransferServer,
    registry: TokenRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = os.pwrite
    written = 0

    def tiny_disk(fd: int, data: Any, offset: int) -> int:
        nonlocal written
        if written >= 2 * MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        written += len(data)
        return real(fd, data, offset)

    monkeypatch.setattr(sink_module.os, "pwrite", tiny_disk)
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB})
    started = time.monotonic()
    with pytest.raises(TransferRefused, match="disk full"):
        await send_files(server.address, token, "mig-1", src, ["disk"], chunk_size=MiB)
    assert time.monotonic() - started < 5  # refused, not retried
    await wait_for(lambda: list(dst.iterdir()) == [])


async def test_not_enough_space_is_refused_before_writing(
    tmp_path: Path,
    src: Path,
    server: TransferServer,
    registry: TokenRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Full:
        f_bavail, f_frsize = 10, 4096

    monkeypatch.setattr(session_module.os, "statvfs", lambda _: Full())
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB})
    with pytest.raises(TransferRefused, match="not enough space"):
        await send_files(server.address, token, "mig-1", src, ["disk"])
    _nothing_written(tmp_path, dst)


async def test_cut_connection_keeps_partials_until_revoked(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    peer = await _accepted(server, registry, dst, {"disk": 4 * CHUNK})
    await peer.chunk(0, os.urandom(MiB))
    assert await peer.ack() == (0, 0, ACK_OK)
    data = os.urandom(MiB)  # then a frame cut short
    head = ChunkHeader(0, 0, 1, chunk_sum(CHUNK, CHUNK, 0, data), MiB, MiB, ((0, MiB),))
    peer.writer.write(chunk_prefix(head) + data[:1000])
    await peer.writer.drain()
    await peer.close()
    # Kept for the resume (the grant is still open)...
    await wait_for(lambda: sorted(os.listdir(dst)) == ["disk.journal", "disk.part"])
    await wait_for(lambda: not server._sessions or all(s.closed for s in server._sessions.values()))
    # ...until the conductor gives up on the migration.
    assert registry.revoke("mig-1") == 1
    assert list(dst.iterdir()) == []


@pytest.mark.parametrize("persistent", [False, True])
async def test_stop_ends_transfers(
    persistent: bool, tmp_path: Path, registry: TokenRegistry
) -> None:
    reg = TokenRegistry(path=tmp_path / "grants.json") if persistent else registry
    server = TransferServer("127.0.0.1", 0, reg)
    await server.start()
    dst = tmp_path / "dst"
    peer = await _accepted(server, reg, dst, {"disk": 4 * MiB})
    await peer.chunk(0, os.urandom(MiB))
    assert await peer.ack() == (0, 0, ACK_OK)
    await server.stop()
    await peer.close()
    # A persistent registry lets a restarted server resume: keep the partials.
    expected = ["disk.journal", "disk.part"] if persistent else []
    assert sorted(os.listdir(dst)) == expected


async def test_existing_destination_file_is_not_replaced(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "disk").write_bytes(b"precious")
    token = grant(registry, dst, {"disk": 16 * MiB})
    with pytest.raises(TransferRefused, match="already exist"):
        await send_files(server.address, token, "mig-1", src, ["disk"])
    assert (dst / "disk").read_bytes() == b"precious"
    token = new_token()
    registry.expect(
        TransferGrant(
            token, "mig-1", dst, {"disk": 16 * MiB}, time.time() + 60, replace_existing=True
        )
    )
    result = await send_files(server.address, token, "mig-1", src, ["disk"])
    assert sparse_digest(dst / "disk") == result.files["disk"].digest


async def test_unreachable_receiver_is_a_transfer_error(src: Path) -> None:
    with pytest.raises(TransferError, match=r"127\.0\.0\.1:1"):
        await send_files(("127.0.0.1", 1), new_token(), "m", src, ["disk"], **FAST)


async def test_source_modified_during_send_is_not_committed(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB})

    def touch(done: int, total: int) -> None:
        if done < total:
            os.utime(src / "disk", ns=(1, time.time_ns()))  # "the VM wrote to it"

    with pytest.raises(TransferError, match="changed while it was being sent"):
        await send_files(
            server.address,
            token,
            "mig-1",
            src,
            ["disk"],
            touch,
            chunk_size=MiB,
            rate_limit=20 * MiB,
            progress_interval=0.02,
        )
    assert not (dst / "disk").exists()


async def test_reachability_probe_is_quiet_and_harmless(
    tmp_path: Path,
    src: Path,
    server: TransferServer,
    registry: TokenRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ferry.transfer")
    for _ in range(3):  # connect and close, as a health check does
        peer = await RawPeer.connect(server.address)
        await peer.close()
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB})
    await send_files(server.address, token, "mig-1", src, ["disk"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sorted(os.listdir(dst)) == ["disk"]
