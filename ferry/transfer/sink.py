"""Receiving side of one file: ``<directory>/<name>.part`` until verified.

A :class:`PartFile` is created sparse (``ftruncate`` to the logical size, so
ranges never written stay holes), receives data with ``os.pwrite`` at the
offsets given, digests exactly what it wrote, and is renamed to its final
name only by :meth:`PartFile.commit`, after :meth:`PartFile.finish` checked
byte count and digest and fsynced it.  :meth:`PartFile.discard` is safe to call
at any point and removes the partial file.

Methods other than :meth:`PartFile.accept` block (disk I/O); the server
runs them in a worker thread.  To
add a post-write check (e.g. re-reading from disk, or image format sniffing),
extend :meth:`PartFile.finish`: it runs before anything becomes visible
under the final name.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .digest import SparseDigest
from .errors import TransferRefused
from .protocol import PART_SUFFIX, EndOfFile


class PartFile:
    def __init__(self, directory: Path, name: str, size: int, mode: int = 0o600) -> None:
        self.name = name
        self.size = size
        self.final_path = directory / name
        self.part_path = directory / (name + PART_SUFFIX)
        self.bytes_written = 0
        self.digest: str | None = None
        self._mode = mode
        self._fd: int | None = None
        self._next = 0  # lowest acceptable offset: data must be ascending
        self._sparse = SparseDigest(size)

    def open(self) -> None:
        # A stale .part from a crashed attempt is removed rather than reused;
        # O_EXCL|O_NOFOLLOW then guarantees we write into a fresh regular file
        # of our own, never through a planted symlink or hard link.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part_path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self.part_path, flags, self._mode)
        os.ftruncate(self._fd, self.size)

    def accept(self, offset: int, length: int) -> None:
        """Check that a frame fits the file and follows the previous one.

        Cheap, so the server calls it on the event loop before handing the
        write to a thread: a bad frame is refused at once, not one frame later.
        """
        if offset < self._next:
            raise TransferRefused(
                f"{self.name}: data at offset {offset} overlaps or is out of order "
                f"(expected >= {self._next})"
            )
        if offset + length > self.size:
            raise TransferRefused(
                f"{self.name}: data at {offset}+{length} goes past the declared size {self.size}"
            )
        self._next = offset + length

    def write(self, offset: int, payload: memoryview) -> None:
        """Write a frame previously passed to :meth:`accept` (blocking)."""
        fd = self._require_open()
        n = len(payload)
        done = 0
        while done < n:
            done += os.pwrite(fd, payload[done:], offset + done)
        self._sparse.update(offset, payload)
        self.bytes_written += n

    def finish(self, end: EndOfFile) -> str:
        """Verify against the sender's trailer, fsync and close; return the digest."""
        fd = self._require_open()
        if end.name != self.name:
            raise TransferRefused(f"end frame for {end.name!r} while receiving {self.name!r}")
        if end.nbytes != self.bytes_written:
            raise TransferRefused(
                f"{self.name}: sender sent {end.nbytes} bytes, received {self.bytes_written}"
            )
        if os.fstat(fd).st_size != self.size:
            raise TransferRefused(f"{self.name}: partial file changed size while receiving")
        digest = self._sparse.hexdigest()
        if digest != end.digest:
            raise TransferRefused(
                f"{self.name}: digest mismatch (sender {end.digest}, received {digest})"
            )
        os.fsync(fd)
        self._close()
        self.digest = digest
        return digest

    def commit(self) -> None:
        if self.digest is None:
            raise RuntimeError(f"{self.name}: commit before a successful finish")
        os.rename(self.part_path, self.final_path)

    def discard(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part_path)

    def _require_open(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.name}: part file is not open")
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
