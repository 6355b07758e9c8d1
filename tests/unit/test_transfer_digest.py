from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ferry.transfer import SparseDigest, sparse_digest
from ferry.transfer.digest import MASK, finish_digest, scan_blocks, sum_runs
from ferry.transfer.extents import BLOCK_SIZE

from .test_transfer_helpers import MiB, allocated, make_sparse


def _pair(tmp_path: Path, size: int, writes: list[tuple[int, bytes]]) -> tuple[Path, Path]:
    """The same logical content, once sparse and once fully written."""
    sparse = make_sparse(tmp_path / "sparse", size, writes)
    dense = bytearray(size)
    for off, data in writes:
        dense[off : off + len(data)] = data
    (tmp_path / "dense").write_bytes(dense)
    return sparse, tmp_path / "dense"


def test_holes_and_written_zeros_give_the_same_digest(tmp_path: Path) -> None:
    writes = [(MiB + 123, os.urandom(70_000)), (3 * MiB - 5, b"end!")]
    sparse, dense = _pair(tmp_path, 3 * MiB - 1, writes)
    # Make sure the layouts really differ, otherwise the test proves nothing.
    assert allocated(dense) >= 3 * MiB - 4096
    assert allocated(sparse) < MiB
    assert sparse_digest(sparse) == sparse_digest(dense)


def test_one_changed_byte_changes_the_digest(tmp_path: Path) -> None:
    writes = [(MiB, os.urandom(10_000))]
    sparse, _ = _pair(tmp_path, 2 * MiB, writes)
    reference = sparse_digest(sparse)
    with open(sparse, "r+b") as f:
        f.seek(MiB + 5000)
        byte = f.read(1)
        f.seek(MiB + 5000)
        f.write(bytes([byte[0] ^ 0x80]))
    assert sparse_digest(sparse) != reference
    # A single non-zero byte inside a hole also counts.
    other = make_sparse(tmp_path / "other", 2 * MiB, [*writes, (7, b"\x01")])
    assert sparse_digest(other) != reference


def test_size_is_part_of_the_digest(tmp_path: Path) -> None:
    a = make_sparse(tmp_path / "a", MiB, [(0, b"data")])
    b = make_sparse(tmp_path / "b", MiB + 1, [(0, b"data")])
    assert sparse_digest(a) != sparse_digest(b)
    assert sparse_digest(make_sparse(tmp_path / "e", 0)) != sparse_digest(
        make_sparse(tmp_path / "z", 1)
    )


def test_moving_a_block_changes_the_digest(tmp_path: Path) -> None:
    block = os.urandom(BLOCK_SIZE)
    a = make_sparse(tmp_path / "a", MiB, [(0, block)])
    b = make_sparse(tmp_path / "b", MiB, [(BLOCK_SIZE, block)])
    assert sparse_digest(a) != sparse_digest(b)


def test_streaming_matches_file_digest_for_any_chunking(tmp_path: Path) -> None:
    size = 5 * BLOCK_SIZE + 1234  # last block is partial
    content = bytearray(size)
    content[100:200_000] = os.urandom(199_900)
    content[-10:] = b"0123456789"
    path = tmp_path / "f"
    path.write_bytes(content)
    expected = sparse_digest(path)
    rng = random.Random(42)
    for _ in range(20):
        digest = SparseDigest(size)
        pos = 0
        while pos < size:
            n = rng.randint(1, 3 * BLOCK_SIZE)
            # Sometimes leave a gap over zeros: omitted ranges count as zeros.
            if rng.random() < 0.3 and not any(content[pos : pos + n]):
                pos += n
                continue
            digest.update(pos, bytes(content[pos : pos + n]))
            pos += n
        assert digest.hexdigest() == expected


def test_streaming_rejects_out_of_order_and_oversized_updates() -> None:
    digest = SparseDigest(1000)
    digest.update(100, b"x" * 10)
    with pytest.raises(ValueError, match="ascending"):
        digest.update(105, b"y")
    with pytest.raises(ValueError, match="past the file size"):
        digest.update(995, b"123456")
    first = digest.hexdigest()
    assert digest.hexdigest() == first
    with pytest.raises(ValueError, match="finalised"):
        digest.update(500, b"z")


def test_digest_is_xxh3_128_hex() -> None:
    value = SparseDigest(0).hexdigest()
    assert len(value) == 32
    int(value, 16)


def test_chunk_sums_add_up_to_the_file_digest_in_any_order(tmp_path: Path) -> None:
    size = 10 * MiB + 4321
    content = bytearray(size)
    for off in (0, 3 * MiB + 7, 9 * MiB, size - 100):
        content[off : off + 70_000] = os.urandom(len(content[off : off + 70_000]))
    path = tmp_path / "f"
    path.write_bytes(content)
    for chunk in (BLOCK_SIZE, MiB, 4 * MiB):
        sums = [scan_blocks(content, 0, a, min(a + chunk, size))[1] for a in range(0, size, chunk)]
        random.Random(chunk).shuffle(sums)
        assert finish_digest(size, sum(sums) & MASK) == sparse_digest(path)


def test_sum_of_unaligned_runs_equals_the_sum_of_the_blocks() -> None:
    """The receiver sums runs of exactly-allocated bytes; the sender whole blocks."""
    seg_len = 5 * BLOCK_SIZE + 1000  # last segment of a file: a short last block
    content = bytearray(seg_len)
    runs = ((100, 4096), (8192, 4096), (BLOCK_SIZE, 2 * BLOCK_SIZE + 5), (5 * BLOCK_SIZE, 1000))
    for rel, n in runs:
        content[rel : rel + n] = os.urandom(n)
    packed = b"".join(bytes(content[rel : rel + n]) for rel, n in runs)
    base = 7 * 4 * MiB
    expected = scan_blocks(content, base, 0, seg_len)[1]
    assert sum_runs(packed, base, seg_len, runs) == expected
    # A flipped bit or a run moved elsewhere changes it.
    flipped = bytearray(packed)
    flipped[5000] ^= 1
    assert sum_runs(bytes(flipped), base, seg_len, runs) != expected
    moved = ((100 + 4096, 4096), *runs[1:])
    assert sum_runs(packed, base, seg_len, moved) != expected
