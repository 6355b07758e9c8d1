"""Everything the receiver must refuse, and proof that nothing was written."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

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
from ferry.transfer import client as client_module
from ferry.transfer.protocol import KIND_ACCEPT, KIND_RESULT

from .test_transfer_helpers import MiB, RawPeer, grant, make_sparse, tree, wait_for


@pytest.fixture
async def registry() -> TokenRegistry:
    return TokenRegistry()


@pytest.fixture
async def server(registry: TokenRegistry) -> AsyncIterator[TransferServer]:
    srv = TransferServer("127.0.0.1", 0, registry)
    await srv.start()
    yield srv
    await srv.stop()


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


async def test_reused_token(
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
    "name", ["../x", "/etc/passwd", "a/b", ".hidden", "ABS", "x\0y", "..", "disk.part"]
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
    kind, result = await peer.header(token, "mig-1", [{"name": name, "size": 10}])
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


async def test_corrupted_frame(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    peer = await _accepted(server, registry, dst, {"disk": 4 * MiB})
    await peer.data(0, os.urandom(MiB))
    await wait_for(lambda: (dst / "disk.part").exists())
    await peer.data(2 * MiB, os.urandom(MiB), corrupt=True)
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "checksum mismatch" in result["error"]
    assert list(dst.iterdir()) == []


async def test_digest_mismatch(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(MiB)
    peer = await _accepted(server, registry, dst, {"disk": 4 * MiB})
    await peer.data(MiB, data)
    await peer.end("disk", len(data), "0" * 32)
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "digest mismatch" in result["error"]
    assert list(dst.iterdir()) == []


async def test_byte_count_mismatch(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(1000)
    make_sparse(tmp_path / "ref", 4096, [(0, data)])
    peer = await _accepted(server, registry, dst, {"disk": 4096})
    await peer.data(0, data)
    await peer.end("disk", 999, sparse_digest(tmp_path / "ref"))
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "sent 999 bytes, received 1000" in result["error"]
    assert list(dst.iterdir()) == []


async def test_out_of_range_and_overlapping_frames(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    peer = await _accepted(server, registry, dst, {"disk": 4096})
    await peer.data(4000, b"x" * 200)
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "past the declared size" in result["error"]
    peer = await _accepted(server, registry, dst, {"disk": 4096})
    await peer.data(100, b"x" * 200)
    await peer.data(200, b"y" * 10)
    await peer.data(300, b"z" * 10)
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "out of order" in result["error"]
    assert list(dst.iterdir()) == []


async def test_all_or_nothing_across_files(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    data = os.urandom(5000)
    ref = make_sparse(tmp_path / "ref", 8192, [(0, data)])
    peer = await _accepted(server, registry, dst, {"a": 8192, "b": 8192})
    await peer.data(0, data)
    await peer.end("a", len(data), sparse_digest(ref))  # good
    await peer.data(0, data)
    await peer.end("b", len(data), "f" * 32)  # bad
    result = await peer.verdict()
    await peer.close()
    assert result["ok"] is False and "b: digest mismatch" in result["error"]
    # "a" was complete and verified, but the grant is all-or-nothing.
    assert list(dst.iterdir()) == []


@pytest.mark.parametrize("cut", ["between-frames", "inside-frame"])
async def test_connection_closed_mid_stream(
    cut: str, tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    peer = await _accepted(server, registry, dst, {"disk": 4 * MiB})
    await peer.data(0, os.urandom(MiB))
    await wait_for(
        lambda: (dst / "disk.part").exists() and os.stat(dst / "disk.part").st_blocks > 0
    )
    if cut == "inside-frame":
        peer.writer.write(b"D\x00\x10\x00\x10" + b"\x00" * 1000)  # promises ~1 MiB
        await peer.writer.drain()
    await peer.close()
    await wait_for(lambda: not (dst / "disk.part").exists())
    assert list(dst.iterdir()) == []


async def test_stop_aborts_transfers_and_removes_partials(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    peer = await _accepted(server, registry, dst, {"disk": 4 * MiB})
    await peer.data(0, os.urandom(MiB))
    await wait_for(lambda: (dst / "disk.part").exists())
    await server.stop()
    assert list(dst.iterdir()) == []
    await peer.close()


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


async def test_sender_surfaces_refusal_while_streaming(
    tmp_path: Path,
    src: Path,
    server: TransferServer,
    registry: TokenRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Corrupt the checksum of the 3rd frame the real client sends.
    real = client_module.data_frame_prefix
    count = 0

    def flaky(offset: int, payload: bytes | memoryview) -> bytes:
        nonlocal count
        count += 1
        prefix = real(offset, payload)
        return prefix[:-1] + bytes([prefix[-1] ^ 1]) if count == 3 else prefix

    monkeypatch.setattr(client_module, "data_frame_prefix", flaky)
    dst = tmp_path / "dst"
    make_sparse(src / "big", 64 * MiB, [(0, os.urandom(32 * MiB))])
    token = grant(registry, dst, {"big": 64 * MiB})
    with pytest.raises(TransferRefused, match="checksum mismatch"):
        await send_files(server.address, token, "mig-1", src, ["big"], chunk_size=MiB)
    assert list(dst.iterdir()) == []


async def test_unreachable_receiver_is_a_transfer_error(src: Path) -> None:
    with pytest.raises(TransferError):
        await send_files(("127.0.0.1", 1), new_token(), "m", src, ["disk"])


async def test_source_modified_during_send_is_not_committed(
    tmp_path: Path, src: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    dst = tmp_path / "dst"
    token = grant(registry, dst, {"disk": 16 * MiB})

    def touch(done: int, total: int) -> None:
        if done < total:
            os.utime(src / "disk", ns=(1, time.time_ns()))  # "the VM wrote to it"

    with pytest.raises(TransferError, match="changed while it was being sent"):
        await send_files(server.address, token, "mig-1", src, ["disk"], touch, chunk_size=MiB)
    await wait_for(lambda: list(dst.iterdir()) == [])


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
