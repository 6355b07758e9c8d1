"""Layout-independent digest of a file's logical content.

Definition (version 1, "ferry-sparse-digest/1"):

    h = xxh3_128()
    h.update(b"ferry-sparse-digest/1\\0" + u64be(size))
    for each BLOCK_SIZE (64 KiB) block, in ascending offset order:
        if the block is not entirely zero:
            h.update(u64be(block_offset) + block)   # last block zero-padded
    digest = h.hexdigest()

Because all-zero blocks are skipped, it does not matter whether a zero region
is a hole, an unwritten extent or written zeros: two files with the same size
and the same bytes have the same digest whatever their allocation, and any
changed byte changes the block it lives in.  Hashing the offset with each
block keeps the byte stream unambiguous.  The cost is O(allocated), since holes
are never read (see :func:`ferry.transfer.extents.data_extents`).

:class:`SparseDigest` computes it incrementally from ``(offset, data)`` pieces
given in ascending, non-overlapping order, in any chunking; omitted ranges
count as zeros.  The sender feeds it what it reads, the receiver what it
receives and writes, so neither re-reads a file.  :func:`sparse_digest` is the
one-shot version for a file on disk.

To change the definition (block size, hash), add a new version string and
keep the old one available as long as peers may use it: the digest is sent
over the wire and compared with the peer's.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import xxhash

from .extents import BLOCK_SIZE, Buffer, data_extents, is_zero

DIGEST_VERSION = b"ferry-sparse-digest/1\0"
_U64 = struct.Struct(">Q")
_READ_CHUNK = 4 * 1024 * 1024


class SparseDigest:
    """Incremental layout-independent digest of a file of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._hash = xxhash.xxh3_128()
        self._hash.update(DIGEST_VERSION + _U64.pack(size))
        self._pos = 0  # end of the last update: enforces ascending order
        self._pending_block: int | None = None  # index of the block in _buf
        self._buf = bytearray(BLOCK_SIZE)
        self._final: str | None = None

    def update(self, offset: int, data: Buffer) -> None:
        """Add ``data`` found at ``offset``; gaps since the last update are zeros."""
        if self._final is not None:
            raise ValueError("digest already finalised")
        n = len(data)
        if offset < self._pos:
            raise ValueError(
                f"updates must be ascending and non-overlapping "
                f"(offset {offset} < previous end {self._pos})"
            )
        if offset + n > self.size:
            raise ValueError(f"data at {offset}+{n} goes past the file size {self.size}")
        pos = 0
        while pos < n:
            file_off = offset + pos
            block = file_off // BLOCK_SIZE
            if self._pending_block is not None and self._pending_block != block:
                self._flush()
            inner = file_off - block * BLOCK_SIZE
            take = min(BLOCK_SIZE - inner, n - pos)
            if take == BLOCK_SIZE:
                # Fast path: a whole aligned block, hash it in place (no copy).
                self._absorb(block * BLOCK_SIZE, data, pos, pos + take)
            else:
                # Partial block: accumulate in the zero-initialised buffer so
                # the block is hashed once, with its holes as zeros.
                self._pending_block = block
                self._buf[inner : inner + take] = data[pos : pos + take]
            pos += take
        self._pos = offset + n

    def hexdigest(self) -> str:
        """Finish and return the hex digest (idempotent; no updates after it)."""
        if self._final is None:
            self._flush()
            self._final = self._hash.hexdigest()
        return self._final

    def _flush(self) -> None:
        if self._pending_block is None:
            return
        self._absorb(self._pending_block * BLOCK_SIZE, self._buf, 0, BLOCK_SIZE)
        self._buf[:] = bytes(BLOCK_SIZE)
        self._pending_block = None

    def _absorb(self, block_offset: int, buf: Buffer, start: int, end: int) -> None:
        if is_zero(buf, start, end):
            return
        self._hash.update(_U64.pack(block_offset))
        self._hash.update(memoryview(buf)[start:end])


def sparse_digest(path: Path) -> str:
    """Return the layout-independent digest of the file at ``path``.

    Reads only allocated extents.  Raises ``OSError`` if the file shrinks while
    being read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        digest = SparseDigest(size)
        for start, length in data_extents(fd, size):
            offset, end = start, start + length
            while offset < end:
                want = min(_READ_CHUNK, end - offset)
                data = os.pread(fd, want, offset)
                if len(data) != want:
                    raise OSError(f"{path}: short read at {offset} (file changed?)")
                digest.update(offset, data)
                offset += want
        return digest.hexdigest()
    finally:
        os.close(fd)
