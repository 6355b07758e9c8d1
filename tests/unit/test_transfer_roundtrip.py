"""End-to-end transfers over real TCP on 127.0.0.1 with real sparse files."""

from __future__ import annotations

import asyncio
import filecmp
import itertools
import os
from pathlib import Path

import pytest

from ferry.transfer import (
    TokenRegistry,
    TransferServer,
    allocated_bytes,
    data_extents,
    send_files,
    sparse_digest,
)

from .test_transfer_helpers import MiB, allocated, grant, make_sparse

GiB = 1024 * MiB


def _source_tree(src: Path) -> dict[str, list[tuple[int, bytes]]]:
    """A 1 GiB-virtual disk with scattered data, a qcow2-ish file, an empty file."""
    src.mkdir()
    disk_writes = [
        (0, os.urandom(MiB)),  # boot sector area
        (300 * MiB + 4096, os.urandom(2 * MiB)),
        (700 * MiB + 123, os.urandom(MiB + 7)),  # unaligned start and length
        (GiB - MiB, os.urandom(MiB)),  # data right up to the end
    ]
    make_sparse(src / "disk", GiB, disk_writes)
    qcow_writes = [
        (0, b"QFI\xfb\x00\x00\x00\x03" + os.urandom(504)),
        (65536, os.urandom(3 * 65536)),
        (5 * 65536, bytes(65536)),  # written zeros: allocated on the source
        (6 * 65536, os.urandom(1000)),
    ]
    make_sparse(src / "disk.qcow2", 6 * 65536 + 1000, qcow_writes)
    make_sparse(src / "empty", 0)
    return {"disk": disk_writes, "disk.qcow2": qcow_writes}


def _within(extent: tuple[int, int], writes: list[tuple[int, bytes]], slack: int) -> bool:
    off, n = extent
    return any(w - slack <= off and off + n <= w + len(d) + slack for w, d in writes)


@pytest.mark.parametrize("streams", [1, 3])
async def test_round_trip_is_identical_sparse_and_verified(
    streams: int, tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src, dst = tmp_path / "src", tmp_path / "instances" / "uuid"
    writes = _source_tree(src)
    names = ["disk", "disk.qcow2", "empty"]
    sizes = {n: (src / n).stat().st_size for n in names}
    token = grant(registry, dst, sizes)
    calls: list[tuple[int, int]] = []

    result = await send_files(
        server.address,
        token,
        "mig-1",
        src,
        names,
        progress=lambda d, t: calls.append((d, t)),
        chunk_size=MiB,
        streams=streams,
        rate_limit=40 * MiB,  # ~0.15 s, so the progress timer fires a few times
        progress_interval=0.02,
    )

    assert sorted(p.name for p in dst.iterdir()) == sorted(names)  # no .part left
    for name in names:
        assert (dst / name).stat().st_size == sizes[name]
        assert sparse_digest(dst / name) == sparse_digest(src / name)
        assert result.files[name].digest == sparse_digest(src / name)
        assert result.files[name].size == sizes[name]
    assert filecmp.cmp(src / "disk.qcow2", dst / "disk.qcow2", shallow=False)
    assert (dst / "empty").read_bytes() == b""

    # Independent of the digest: every written range reads back identically...
    with open(dst / "disk", "rb") as f:
        for off, data in writes["disk"]:
            f.seek(off)
            assert f.read(len(data)) == data
    # ...and everything else on the destination is a hole (hence zero).
    fd = os.open(dst / "disk", os.O_RDONLY)
    try:
        dst_extents = list(data_extents(fd, GiB))
    finally:
        os.close(fd)
    assert dst_extents and all(_within(e, writes["disk"], 65536) for e in dst_extents)

    # Still sparse: a few MiB allocated for 1 GiB, and only what was needed sent.
    data_bytes = sum(len(d) for _, d in writes["disk"])
    assert allocated(dst / "disk") < 16 * MiB
    src_alloc = sum(result.files[n].allocated_bytes for n in names)
    assert result.files["disk"].allocated_bytes < 16 * MiB
    assert data_bytes <= result.bytes_sent <= src_alloc
    assert result.wire_bytes <= 1.02 * src_alloc + 4096  # framing is small
    # The written-zero block of the qcow2-ish file was not sent and is a hole.
    assert allocated(dst / "disk.qcow2") < allocated(src / "disk.qcow2")
    assert result.seconds > 0

    # Progress: monotonic, periodic, ending at the allocated total.
    assert len(calls) >= 3
    assert calls[-1] == (src_alloc, src_alloc)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


async def test_allocated_zeros_stay_holes(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "prealloc").write_bytes(bytes(8 * MiB))  # fully allocated, all zero
    fd = os.open(src / "prealloc", os.O_RDONLY)
    try:
        assert allocated_bytes(fd, 8 * MiB) == 8 * MiB
    finally:
        os.close(fd)
    token = grant(registry, dst, {"prealloc": 8 * MiB})
    result = await send_files(server.address, token, "mig-1", src, ["prealloc"])
    assert result.bytes_sent == 0
    assert (dst / "prealloc").stat().st_size == 8 * MiB
    assert allocated(dst / "prealloc") == 0
    assert filecmp.cmp(src / "prealloc", dst / "prealloc", shallow=False)


async def test_two_transfers_at_once(
    tmp_path: Path, server: TransferServer, registry: TokenRegistry
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_sparse(src / "a", 64 * MiB, [(10 * MiB, os.urandom(3 * MiB))])
    make_sparse(src / "b", 64 * MiB, [(20 * MiB, os.urandom(3 * MiB))])
    t1 = grant(registry, tmp_path / "d1", {"a": 64 * MiB}, "m1")
    t2 = grant(registry, tmp_path / "d2", {"b": 64 * MiB}, "m2")
    r1, r2 = await asyncio.gather(
        send_files(server.address, t1, "m1", src, ["a"]),
        send_files(server.address, t2, "m2", src, ["b"]),
    )
    assert sparse_digest(tmp_path / "d1" / "a") == r1.files["a"].digest
    assert sparse_digest(tmp_path / "d2" / "b") == r2.files["b"].digest
