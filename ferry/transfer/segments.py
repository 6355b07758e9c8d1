"""Sending side of one file: where its segments are and what they hold.

A file is cut into segments of ``chunk_size`` bytes at fixed offsets
(segment ``i`` covers ``[i*chunk_size, (i+1)*chunk_size)``).  :func:`plan`
walks the filesystem's data extents lazily (``SEEK_DATA``/``SEEK_HOLE``, so
holes cost nothing and memory does not grow with the disk) and yields one
:class:`Segment` per segment that holds any allocated byte, with the ranges
to read widened to whole 64 KiB blocks.  :func:`load` reads those ranges
into a reused buffer with ``preadv`` and scans them: all-zero blocks are
dropped (so written zeros become holes on the destination) and the others
are summed (see :mod:`.digest`).

Fixed segment boundaries are what make resume cheap: the receiver's
journal names segments by index, and the sender, reading a segment again,
can tell from its sum whether the receiver already has it.

To use another allocation map (e.g. ``qemu-img map`` for a block device),
write another ``plan`` yielding the same Segments; nothing else changes.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .digest import scan_blocks
from .errors import TransferError
from .extents import BLOCK_SIZE, data_extents


@dataclass
class Source:
    index: int
    name: str
    fd: int
    size: int
    mtime_ns: int
    allocated: int  # bytes in data extents (what progress counts)

    def changed(self) -> bool:
        st = os.fstat(self.fd)
        return st.st_size != self.size or st.st_mtime_ns != self.mtime_ns


@dataclass
class Segment:
    file: int
    index: int
    start: int  # file offset of the segment
    ranges: list[tuple[int, int]] = field(default_factory=list)  # [start, end) to read
    exact: list[tuple[int, int]] = field(default_factory=list)  # data extents, [start, end)
    allocated: int = 0


@dataclass
class Loaded:
    # [start, end) positions in the buffer = offsets in the segment: the
    # allocated bytes of the blocks that are not all zero
    runs: list[tuple[int, int]]
    sum: int
    nbytes: int


def open_source(directory: Path, name: str, index: int) -> Source:
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TransferError(f"cannot open source file {name!r}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TransferError(f"{name!r} is not a regular file")
        allocated = sum(n for _, n in data_extents(fd, st.st_size))
        return Source(index, name, fd, st.st_size, st.st_mtime_ns, allocated)
    except BaseException:
        os.close(fd)
        raise


def plan(src: Source, chunk_size: int) -> Iterator[Segment]:
    """Segments of ``src`` that hold allocated bytes, ascending."""
    cur: Segment | None = None
    for start, length in data_extents(src.fd, src.size):
        pos, end = start, start + length
        while pos < end:
            index = pos // chunk_size
            seg_end = min((index + 1) * chunk_size, src.size)
            piece_end = min(end, seg_end)
            if cur is None or cur.index != index:
                if cur is not None:
                    yield cur
                cur = Segment(src.index, index, index * chunk_size)
            lo = pos - pos % BLOCK_SIZE
            hi = min(seg_end, -(-piece_end // BLOCK_SIZE) * BLOCK_SIZE)
            if cur.ranges and lo <= cur.ranges[-1][1]:
                cur.ranges[-1] = (cur.ranges[-1][0], max(hi, cur.ranges[-1][1]))
            else:
                cur.ranges.append((lo, hi))
            cur.exact.append((pos, piece_end))
            cur.allocated += piece_end - pos
            pos = piece_end
    if cur is not None:
        yield cur


def load(src: Source, seg: Segment, buf: bytearray) -> Loaded:
    """Read ``seg`` into ``buf`` (positions relative to the segment) and scan it."""
    view = memoryview(buf)
    blocks: list[tuple[int, int]] = []
    total = 0
    for start, end in seg.ranges:
        a, b = start - seg.start, end - seg.start
        got = os.preadv(src.fd, [view[a:b]], start)
        if got != b - a:
            raise TransferError(f"short read of {src.name!r} at {start}: source file changed?")
        found, s, _ = scan_blocks(buf, seg.start, a, b)
        blocks.extend(found)
        total += s
    # Send only the allocated bytes of the non-zero blocks: whole blocks were
    # read (their holes read as zeros) so the sums are block-exact, but a
    # guest's scattered 4 KiB writes must not cost 64 KiB each on the wire.
    runs = _intersect(blocks, [(a - seg.start, b - seg.start) for a, b in seg.exact])
    return Loaded(runs, total & ((1 << 128) - 1), sum(b - a for a, b in runs))


def _intersect(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersection of two ascending lists of disjoint [start, end) ranges."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        lo = max(xs[i][0], ys[j][0])
        hi = min(xs[i][1], ys[j][1])
        if lo < hi:
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


class WorkQueue:
    """Segments of every file, handed out one at a time to the stream threads.

    Files are walked in order and each lazily, so memory stays constant; a
    lock makes ``next`` safe to call from all streams at once.
    """

    def __init__(self, sources: list[Source], chunk_size: int) -> None:
        self._iter = (seg for src in sources for seg in plan(src, chunk_size))
        self._lock = threading.Lock()

    def next(self) -> Segment | None:
        with self._lock:
            return next(self._iter, None)
