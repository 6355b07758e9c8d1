"""Rate limits, compression, TLS, progress and parallel streams."""

from __future__ import annotations

import asyncio
import filecmp
import os
import time
from pathlib import Path

import pytest

from ferry.transfer import (
    Progress,
    TokenBucket,
    TokenRegistry,
    TransferError,
    TransferServer,
    send_files,
    sparse_digest,
)
from ferry.transfer.codec import Compressor
from ferry.transfer.tls import client_context, make_ca, make_host_cert, server_context

from .test_transfer_helpers import MiB, grant, make_sparse


def _random_disk(directory: Path, name: str, data: int, size: int = 64 * MiB) -> Path:
    directory.mkdir(exist_ok=True)
    return make_sparse(directory / name, size, [(MiB, os.urandom(data))])


# -- bandwidth ------------------------------------------------------------------


async def test_per_migration_rate_limit(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    _random_disk(src, "disk", 20 * MiB)
    token = grant(registry, tmp_path / "dst", {"disk": 64 * MiB})
    started = time.monotonic()
    await send_files(server.address, token, "mig-1", src, ["disk"], rate_limit=40 * MiB)
    assert time.monotonic() - started >= 0.45


async def test_per_host_limit_is_shared_by_transfers(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    _random_disk(src, "a", 10 * MiB)
    _random_disk(src, "b", 10 * MiB)
    host = TokenBucket(40 * MiB)
    t1 = grant(registry, tmp_path / "d1", {"a": 64 * MiB}, "m1")
    t2 = grant(registry, tmp_path / "d2", {"b": 64 * MiB}, "m2")
    started = time.monotonic()
    await asyncio.gather(
        send_files(server.address, t1, "m1", src, ["a"], host_limiter=host),
        send_files(server.address, t2, "m2", src, ["b"], host_limiter=host),
    )
    assert time.monotonic() - started >= 0.45


async def test_receiver_side_limits(tmp_path: Path, registry: TokenRegistry) -> None:
    src = tmp_path / "src"
    _random_disk(src, "disk", 20 * MiB)
    srv = TransferServer("127.0.0.1", 0, registry, rate_limit=40 * MiB)
    await srv.start()
    try:
        token = grant(registry, tmp_path / "dst", {"disk": 64 * MiB})
        started = time.monotonic()
        await send_files(srv.address, token, "mig-1", src, ["disk"])
        assert time.monotonic() - started >= 0.45
        # ...and the grant's own per-migration cap, with the host limit lifted.
        srv.set_rate_limit(None)
        token = grant(registry, tmp_path / "dst2", {"disk": 64 * MiB}, rate_limit=40 * MiB)
        started = time.monotonic()
        await send_files(srv.address, token, "mig-1", src, ["disk"])
        assert time.monotonic() - started >= 0.45
    finally:
        await srv.stop()


def test_token_bucket_long_run_rate_is_exact() -> None:
    now = [0.0]
    bucket = TokenBucket(
        1000.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    for _ in range(100):
        bucket.take(100)
    assert 9.9 <= now[0] <= 10.0  # 10 000 bytes at 1000 B/s, minus a 20 ms burst


# -- compression ---------------------------------------------------------------------


async def test_zstd_turns_itself_off_on_random_data(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    _random_disk(src, "disk", 32 * MiB)
    token = grant(registry, tmp_path / "dst", {"disk": 64 * MiB})
    result = await send_files(
        server.address, token, "mig-1", src, ["disk"], compress=True, chunk_size=MiB, streams=1
    )
    assert result.chunks_compressed == 0
    assert result.bytes_sent == 32 * MiB  # sent raw
    assert sparse_digest(tmp_path / "dst" / "disk") == sparse_digest(src / "disk")


async def test_zstd_is_used_on_text_and_sparse_content(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    text = b"".join(
        b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(200_000)
    )[: 8 * MiB]
    zeros_in_data = bytes(b if i % 7 else 0 for i, b in enumerate(os.urandom(MiB))) * 4
    make_sparse(src / "disk", 64 * MiB, [(0, text), (32 * MiB, zeros_in_data)])
    token = grant(registry, tmp_path / "dst", {"disk": 64 * MiB})
    result = await send_files(
        server.address, token, "mig-1", src, ["disk"], compress=True, chunk_size=MiB
    )
    assert result.chunks_compressed >= 8  # every text chunk
    assert result.bytes_sent < 0.5 * result.files["disk"].bytes
    assert filecmp.cmp(src / "disk", tmp_path / "dst" / "disk", shallow=False)


def test_compressor_samples_again_after_giving_up() -> None:
    codec = Compressor()
    noise = [memoryview(os.urandom(65536))]
    text = [memoryview(b"abc" * 21845 + b"a")]
    for _ in range(40):
        assert codec.compress(noise, 65536) is None
    assert codec.tried < 10  # it stopped trying...
    found = [codec.compress(text, 65536) for _ in range(40)]
    assert any(f is not None for f in found)  # ...and noticed when data compresses again


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d / "ca")
    other_ca = make_ca(d / "other", "some other CA")
    return {
        "ca": ca,
        "dest": make_host_cert(ca, d / "hosts", "dest", ["127.0.0.1"]),
        "source": make_host_cert(ca, d / "hosts", "source", ["127.0.0.2"]),
        "other_ca": other_ca,
        "stranger": make_host_cert(other_ca, d / "stranger", "stranger", ["127.0.0.3"]),
    }


async def test_tls_round_trip_and_refusals(
    tmp_path: Path, registry: TokenRegistry, pki: dict[str, object]
) -> None:
    ca, dest, source = pki["ca"], pki["dest"], pki["source"]
    srv = TransferServer("127.0.0.1", 0, registry, ssl_context=server_context(dest, ca.cert))  # type: ignore[attr-defined, arg-type]
    await srv.start()
    src = tmp_path / "src"
    _random_disk(src, "disk", 8 * MiB)
    try:
        token = grant(registry, tmp_path / "dst", {"disk": 64 * MiB})
        good = client_context(ca.cert, source)  # type: ignore[attr-defined, arg-type]
        result = await send_files(
            srv.address, token, "mig-1", src, ["disk"], ssl_context=good, streams=2
        )
        assert sparse_digest(tmp_path / "dst" / "disk") == result.files["disk"].digest

        token = grant(registry, tmp_path / "dst2", {"disk": 64 * MiB})
        # The receiver's certificate is not from the CA this sender trusts.
        wrong = client_context(pki["other_ca"].cert, source)  # type: ignore[attr-defined, arg-type]
        started = time.monotonic()
        with pytest.raises(TransferError, match="not trusted"):
            await send_files(srv.address, token, "mig-1", src, ["disk"], ssl_context=wrong)
        assert time.monotonic() - started < 2  # not retried
        # A sender whose certificate is not from the cluster CA is turned away.
        stranger = client_context(ca.cert, pki["stranger"])  # type: ignore[attr-defined, arg-type]
        with pytest.raises(TransferError):
            await send_files(
                srv.address,
                token,
                "mig-1",
                src,
                ["disk"],
                ssl_context=stranger,
                attempts=2,
                backoff=0.01,
            )
        # Plain TCP to a TLS endpoint gets nowhere either.
        with pytest.raises(TransferError):
            await send_files(
                srv.address,
                token,
                "mig-1",
                src,
                ["disk"],
                attempts=1,
                connect_timeout=2,
                idle_timeout=2,
            )
        assert not (tmp_path / "dst2" / "disk").exists()
    finally:
        await srv.stop()


# -- progress and parallel streams ---------------------------------------------------


async def test_progress_reports_rate_and_eta(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    _random_disk(src, "disk", 16 * MiB)
    token = grant(registry, tmp_path / "dst", {"disk": 64 * MiB})
    seen: list[Progress] = []
    await send_files(
        server.address,
        token,
        "mig-1",
        src,
        ["disk"],
        rate_limit=40 * MiB,
        on_progress=seen.append,
        progress_interval=0.05,
        chunk_size=MiB,
    )
    assert len(seen) >= 4
    middle = [p for p in seen if 0 < p.done < p.total]
    assert middle and all(p.rate > 0 and p.eta is not None for p in middle)
    assert any(10 * MiB < p.rate < 80 * MiB for p in middle)  # the limit is 40 MiB/s
    last = seen[-1]
    assert last.done == last.total == 16 * MiB and last.percent == 100.0
    assert last.files["disk"].done == 16 * MiB


@pytest.mark.parametrize("streams", [1, 2, 4])
async def test_parallel_streams_produce_identical_files(
    streams: int, tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_sparse(
        src / "big", 96 * MiB, [(i * 6 * MiB + 4096, os.urandom(3 * MiB)) for i in range(16)]
    )
    make_sparse(src / "small", 5 * MiB + 17, [(0, os.urandom(5 * MiB + 17))])
    make_sparse(src / "empty", 0)
    names = ["big", "small", "empty"]
    token = grant(registry, tmp_path / "dst", {n: (src / n).stat().st_size for n in names})
    result = await send_files(
        server.address, token, "mig-1", src, names, streams=streams, chunk_size=MiB
    )
    for name in names:
        assert filecmp.cmp(src / name, tmp_path / "dst" / name, shallow=False)
        assert result.files[name].digest == sparse_digest(src / name)
    assert result.bytes_sent == sum(f.allocated_bytes for f in result.files.values())
