"""Which parts of a file carry data.

Two views are offered:

* :func:`data_extents` asks the *filesystem* (``SEEK_DATA``/``SEEK_HOLE``)
  which byte ranges are allocated, so reading a sparse disk image costs
  O(allocated) instead of O(virtual size).
* :func:`nonzero_runs` looks at *content*: it splits a buffer into runs of
  ``BLOCK_SIZE``-aligned blocks that are not all zero.  The sender uses it so
  that allocated-but-zero regions (preallocated images, zeroed blocks) are not
  sent and stay holes on the destination.

``BLOCK_SIZE`` is also the granularity of the layout-independent digest in
:mod:`ferry.transfer.digest`; changing it changes every digest, so bump the
digest version there if you ever do.  To support another way of discovering
allocation (e.g. ``FIEMAP`` or a qcow2 map), add a function yielding the same
``(offset, length)`` pairs, ascending and non-overlapping.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

BLOCK_SIZE = 64 * 1024
_ZERO_BLOCK = bytes(BLOCK_SIZE)

Buffer = bytes | bytearray | memoryview


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(offset, length)`` of the allocated ranges of ``fd`` below ``size``.

    Extents are ascending, non-overlapping and clipped to ``size`` (the caller's
    idea of the file size; bytes past it are ignored so a file growing under us
    cannot make us read unbounded data).  When the filesystem cannot report
    holes the whole file is returned as a single extent, which is always
    correct, only slower.  The file offset of ``fd`` is moved; use ``os.pread``
    to read.
    """
    if size <= 0:
        return
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                # ENXIO: no data at or after ``offset``; the rest is a hole.
                return
            if offset == 0 and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                # Filesystem without SEEK_DATA support: treat as fully allocated.
                yield (0, size)
                return
            raise
        if start >= size:
            return
        try:
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            # The file shrank between the two seeks; read to our size and let
            # the short read be reported by the caller.
            end = size
        end = min(end, size)
        if end <= start:
            # Defensive: never loop forever on a confused filesystem.
            end = size
        yield (start, end - start)
        offset = end


def block_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of data extents widened to whole blocks and merged.

    Every block that holds any allocated byte is covered exactly once; the
    hole bytes inside such a block read back as zeros, so hashing whole
    blocks gives the same result as hashing the data alone.
    """
    cur: tuple[int, int] | None = None
    for start, length in data_extents(fd, size):
        lo = start - start % BLOCK_SIZE
        hi = min(size, -(-(start + length) // BLOCK_SIZE) * BLOCK_SIZE)
        if cur is not None and lo <= cur[1]:
            cur = (cur[0], max(cur[1], hi))
            continue
        if cur is not None:
            yield cur
        cur = (lo, hi)
    if cur is not None:
        yield cur


def allocated_bytes(fd: int, size: int) -> int:
    """Bytes covered by :func:`data_extents` (what a sparse copy has to read)."""
    return sum(length for _, length in data_extents(fd, size))


def is_zero(buf: Buffer, start: int = 0, end: int | None = None) -> bool:
    """True if ``buf[start:end]`` is all zero bytes.

    ``bytes.startswith`` is a memcmp without copying (about 50 GB/s), whereas
    comparing memoryviews goes element by element (about 1 GB/s), hence the
    split by type.
    """
    if end is None:
        end = len(buf)
    n = end - start
    if n <= 0:
        return True
    zero = _ZERO_BLOCK if n == BLOCK_SIZE else bytes(n)
    if isinstance(buf, bytes | bytearray):
        return buf.startswith(zero, start)
    return bytes(buf[start:end]) == zero


def nonzero_runs(offset: int, buf: Buffer) -> Iterator[tuple[int, memoryview]]:
    """Split ``buf`` (which sits at file ``offset``) into runs that are not zero.

    The buffer is cut at file offsets that are multiples of ``BLOCK_SIZE``; each
    piece that is entirely zero is dropped and adjacent non-zero pieces are
    merged.  Yields ``(file_offset, view)`` with views into ``buf`` (no copies).
    """
    view = memoryview(buf)
    total = len(view)
    run_start: int | None = None
    pos = 0
    while pos < total:
        # Next block boundary in *file* coordinates, so that the sender and the
        # digest agree on block edges whatever the chunking.
        boundary = ((offset + pos) // BLOCK_SIZE + 1) * BLOCK_SIZE - offset
        end = min(boundary, total)
        if is_zero(buf, pos, end):
            if run_start is not None:
                yield (offset + run_start, view[run_start:pos])
                run_start = None
        elif run_start is None:
            run_start = pos
        pos = end
    if run_start is not None:
        yield (offset + run_start, view[run_start:total])
