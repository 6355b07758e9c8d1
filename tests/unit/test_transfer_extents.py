from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest

from ferry.transfer import extents
from ferry.transfer.extents import BLOCK_SIZE, data_extents, is_zero, nonzero_runs

from .test_transfer_helpers import MiB, make_sparse


def _extents(path: Path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(data_extents(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def test_extents_of_sparse_file_cover_data_and_skip_holes(tmp_path: Path) -> None:
    writes = [(1 * MiB, b"a" * 4096), (5 * MiB + 100, b"b" * 10000)]
    path = make_sparse(tmp_path / "f", 10 * MiB, writes)
    found = _extents(path)
    assert found, "data must be found"
    # Ascending, non-overlapping, within the file.
    for (a_off, a_len), (b_off, _) in itertools.pairwise(found):
        assert a_off + a_len <= b_off
    assert all(off >= 0 and off + n <= 10 * MiB for off, n in found)
    for off, data in writes:
        assert any(s <= off and off + len(data) <= s + n for s, n in found)
    # Only a few filesystem blocks are allocated, not 10 MiB.
    assert sum(n for _, n in found) < 256 * 1024


def test_extents_data_up_to_the_end_and_empty_files(tmp_path: Path) -> None:
    path = make_sparse(tmp_path / "tail", 2 * MiB, [(2 * MiB - 3, b"xyz")])
    found = _extents(path)
    assert found[-1][0] + found[-1][1] == 2 * MiB
    assert _extents(make_sparse(tmp_path / "empty", 0)) == []
    assert _extents(make_sparse(tmp_path / "hole", 3 * MiB)) == []


def test_dense_file_is_one_extent(tmp_path: Path) -> None:
    path = tmp_path / "dense"
    path.write_bytes(os.urandom(300_000))
    assert _extents(path) == [(0, 300_000)]


def test_extents_are_clipped_to_the_given_size(tmp_path: Path) -> None:
    path = tmp_path / "dense"
    path.write_bytes(os.urandom(300_000))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert list(data_extents(fd, 1000)) == [(0, 1000)]
    finally:
        os.close(fd)


def test_fallback_when_filesystem_lacks_seek_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_sparse(tmp_path / "f", 4 * MiB, [(MiB, b"x")])

    def no_seek_data(fd: int, pos: int, how: int) -> int:
        raise OSError(errno.EINVAL, "not supported")

    monkeypatch.setattr(extents.os, "lseek", no_seek_data)
    assert _extents(path) == [(0, 4 * MiB)]


def test_is_zero_on_all_buffer_types() -> None:
    data = bytes(100) + b"\x01" + bytes(100)
    for buf in (data, bytearray(data), memoryview(data)):
        assert is_zero(buf, 0, 100)
        assert not is_zero(buf, 0, 101)
        assert is_zero(buf, 101)
        assert is_zero(buf, 5, 5)


def test_nonzero_runs_cut_at_file_block_boundaries() -> None:
    # Buffer sits at a file offset that is not block aligned.
    base = BLOCK_SIZE // 2
    buf = bytearray(4 * BLOCK_SIZE)
    buf[10] = 1  # file block 0 (the first half block of the buffer)
    buf[base + 2 * BLOCK_SIZE + 5] = 2  # file block 3
    runs = [(off, bytes(v)) for off, v in nonzero_runs(base, buf)]
    assert [(off, len(v)) for off, v in runs] == [
        (base, BLOCK_SIZE - base),
        (3 * BLOCK_SIZE, BLOCK_SIZE),
    ]
    assert runs[0][1][10] == 1
    assert runs[1][1][5] == 2


def test_nonzero_runs_merge_adjacent_blocks_and_skip_zero_buffers() -> None:
    buf = os.urandom(3 * BLOCK_SIZE)
    assert [(o, len(v)) for o, v in nonzero_runs(0, buf)] == [(0, 3 * BLOCK_SIZE)]
    assert list(nonzero_runs(0, bytes(3 * BLOCK_SIZE))) == []
