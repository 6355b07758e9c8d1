"""Write-back and drop-behind on the receiving side (``ferry.transfer._linux.Writeback``).

Residency is read with ``mincore`` through ctypes: pages a range settled
must be gone from the page cache, and the data must read back the same.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
from pathlib import Path

import pytest

from ferry.transfer import _linux
from ferry.transfer.journal import Journal
from ferry.transfer.sink import PartFile

MiB = 1024 * 1024
PAGE = mmap.PAGESIZE

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _linux._libc is None, reason="Linux only"
)


def resident_pages(fd: int, offset: int, length: int) -> int:
    """How many pages of ``[offset, offset+length)`` are in the page cache."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        vec = ctypes.create_string_buffer(length // PAGE)
        assert libc.mincore(addr, length, vec) == 0
        return sum(b & 1 for b in vec.raw)
    finally:
        libc.munmap(addr, length)


def drops_pages(directory: Path) -> bool:
    """Whether this filesystem lets clean pages go (tmpfs, for one, does not)."""
    probe = directory / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, os.urandom(MiB), 0)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, MiB, os.POSIX_FADV_DONTNEED)
        return resident_pages(fd, 0, MiB) == 0
    finally:
        os.close(fd)
        probe.unlink()


def test_settled_ranges_leave_the_page_cache_and_read_back(tmp_path: Path) -> None:
    if not drops_pages(tmp_path):
        pytest.skip("this filesystem keeps clean pages cached (tmpfs?)")
    path = tmp_path / "data"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    chunks = [os.urandom(MiB) for _ in range(16)]
    try:
        flusher = _linux.Writeback(fd, lag=2 * MiB)
        for i, chunk in enumerate(chunks):
            os.pwrite(fd, chunk, i * MiB)
            flusher.submit(i * MiB, MiB)
        flusher._requests.join()  # every hint handled (close() would abandon the rest)
        flusher.close()
        assert flusher.error is None
        # Everything but the last ~lag bytes was waited for and dropped.
        assert resident_pages(fd, 0, 12 * MiB) == 0
        assert resident_pages(fd, 15 * MiB, MiB) == MiB // PAGE  # not settled yet
        assert os.pread(fd, 16 * MiB, 0) == b"".join(chunks)
    finally:
        os.close(fd)


def test_without_drop_behind_pages_stay_cached(tmp_path: Path) -> None:
    path = tmp_path / "data"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flusher = _linux.Writeback(fd, lag=MiB, drop_behind=False)
        for i in range(8):
            os.pwrite(fd, os.urandom(MiB), i * MiB)
            flusher.submit(i * MiB, MiB)
        flusher._requests.join()
        flusher.close()
        assert resident_pages(fd, 0, 8 * MiB) == 8 * MiB // PAGE
    finally:
        os.close(fd)


def test_close_returns_with_a_full_queue(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 64 * MiB)
        flusher = _linux.Writeback(fd, lag=0)
        for i in range(2000):  # more than the queue holds: the excess is shed
            flusher.submit((i % 64) * MiB, MiB)
        flusher.close()  # abandons what is queued instead of working through it
        assert flusher._thread is None and flusher._fd is None
        flusher.submit(0, MiB)  # after close: ignored, no thread to take it
    finally:
        os.close(fd)


def _part(tmp_path: Path) -> PartFile:
    part = PartFile(tmp_path, "disk", 8 * MiB, 4 * MiB, "mig-1")
    part.open()
    data = os.urandom(MiB)
    part.write(0, [(0, memoryview(data))], MiB, 1)
    return part


def test_a_writeback_error_fails_the_final_fsync(tmp_path: Path) -> None:
    part = _part(tmp_path)
    assert part._flusher is not None
    part._flusher.error = OSError(errno.EIO, "write-back failed")  # as the flusher records it
    with pytest.raises(OSError) as caught:
        part.finish()
    assert caught.value.errno == errno.EIO
    part.close()


def test_a_writeback_error_keeps_the_journal_unsynced(tmp_path: Path) -> None:
    part = _part(tmp_path)
    assert part._flusher is not None
    part._flusher.error = OSError(errno.EIO, "write-back failed")
    part.close(sync=True)
    # Not marked synced: a resume must re-hash the segment before trusting it.
    found = Journal.load_marked(part.journal.path, part.journal.header)
    assert found is not None
    entries, trusted = found
    assert 0 in entries and trusted == set()
