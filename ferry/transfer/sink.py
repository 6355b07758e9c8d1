"""Receiving side of one file: ``<directory>/<name>.part`` + its journal until verified.

A :class:`PartFile` is created sparse (``ftruncate`` to the logical size, so
ranges never written stay holes) or *resumed*: when a journal bound to the
same migration, size and chunk size exists, every journaled segment is
re-hashed from the partial file and only those that match are kept (see
:mod:`.journal`).  Verified chunks are written with ``os.pwrite`` at their
offsets by whichever stream thread received them, then journaled.

:meth:`PartFile.check` compares the sender's claims (segment count, bytes,
digest) with the journal; :meth:`finish` fsyncs; :meth:`commit` renames into
place; :meth:`close` keeps the partial file and journal for a later resume;
:meth:`discard` removes both.  All methods block (disk I/O) and are called
from worker threads.  To add a post-write check (e.g. image format
sniffing), extend :meth:`check`: it runs before anything becomes visible
under the final name.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from . import _linux
from .digest import MASK, finish_digest, scan_blocks
from .errors import TransferRefused
from .journal import Journal
from .protocol import JOURNAL_SUFFIX, PART_SUFFIX


class PartFile:
    def __init__(
        self,
        directory: Path,
        name: str,
        size: int,
        chunk_size: int,
        migration_uuid: str,
        mode: int = 0o600,
    ) -> None:
        self.name = name
        self.size = size
        self.chunk_size = chunk_size
        self.final_path = directory / name
        self.part_path = directory / (name + PART_SUFFIX)
        header = {"migration_uuid": migration_uuid, "size": size, "chunk_size": chunk_size}
        self.journal = Journal(directory / (name + JOURNAL_SUFFIX), header)
        self.digest: str | None = None
        self.resumed_bytes = 0  # verified bytes found at open (not re-sent)
        self._mode = mode
        self._fd: int | None = None
        self._lock = threading.Lock()
        # Start writing each chunk to disk as soon as it is written, so the
        # fsync before the rename has little left to do, and drop it from
        # the page cache once it is there (see _linux.Writeback).  Set
        # before open().
        self.writeback = True
        self._flusher: _linux.Writeback | None = None

    # -- open / resume ---------------------------------------------------------

    def open(self) -> None:
        found = Journal.load_marked(self.journal.path, self.journal.header)
        fd = self._open_existing() if found is not None else None
        entries, trusted = found if found is not None and fd is not None else ({}, set())
        if fd is None:
            fd = self._create()
        self._fd = fd
        verified = self._verify(entries, trusted)
        self.resumed_bytes = sum(n for n, _ in verified.values())
        self.journal.create(verified)
        if self.writeback:
            self._flusher = _linux.Writeback(fd)

    def _open_existing(self) -> int | None:
        # Only reuse a regular file of ours with one link and the right size:
        # never write through a planted symlink or hard link.
        try:
            fd = os.open(self.part_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != self.size:
            os.close(fd)
            return None
        return fd

    def _create(self) -> int:
        # A stale .part without a usable journal cannot be trusted: start over.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part_path)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.part_path, flags, self._mode)
        os.ftruncate(fd, self.size)
        return fd

    def _verify(
        self, entries: dict[int, tuple[int, int]], trusted: set[int]
    ) -> dict[int, tuple[int, int]]:
        """Keep the journal records known to be synced, and the others whose
        segment still hashes to the recorded sum."""
        fd = self._require_open()
        kept = {seg: entries[seg] for seg in trusted}
        if len(kept) == len(entries):
            return kept
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        for seg, (nbytes, chunk_sum) in sorted(entries.items()):
            if seg in trusted:
                continue
            start = seg * self.chunk_size
            n = min(self.chunk_size, self.size - start)
            if n <= 0 or os.preadv(fd, [view[:n]], start) != n:
                continue
            # The sum covers the content; the byte count is what was sent.
            if scan_blocks(buf, start, 0, n)[1] == chunk_sum:
                kept[seg] = (nbytes, chunk_sum)
        return kept

    # -- receiving -------------------------------------------------------------

    def has(self, segment: int) -> bool:
        return segment in self.journal.entries

    def segment_bounds(self, segment: int) -> tuple[int, int]:
        start = segment * self.chunk_size
        if start >= self.size:
            raise TransferRefused(f"{self.name}: segment {segment} is past the end of the file")
        return start, min(self.chunk_size, self.size - start)

    def write(
        self, segment: int, runs: list[tuple[int, memoryview]], nbytes: int, chunk_sum: int
    ) -> None:
        """Write verified runs ``(offset in segment, data)`` and journal the segment."""
        fd = self._require_open()
        start, _ = self.segment_bounds(segment)
        if segment in self.journal.entries:
            # Replacing journaled data (the source differs from what we hold):
            # clear the whole segment first so no stale block survives.
            _linux.punch_hole(fd, start, self.chunk_size)
        for rel, data in runs:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], start + rel + done)
        with self._lock:
            self.journal.record(segment, nbytes, chunk_sum)
        if self._flusher is not None:
            self._flusher.submit(start, self.chunk_size)

    # -- completion ------------------------------------------------------------

    def check(self, segments: int, nbytes: int, digest: str) -> str:
        """Verify the sender's claims against the journal; return the digest."""
        with self._lock:
            entries = dict(self.journal.entries)
        have_bytes = sum(n for n, _ in entries.values())
        if len(entries) != segments or have_bytes != nbytes:
            raise TransferRefused(
                f"{self.name}: sender sent {nbytes} bytes in {segments} segments, "
                f"received {have_bytes} in {len(entries)}"
            )
        total = 0
        for _, chunk_sum in entries.values():
            total = (total + chunk_sum) & MASK
        mine = finish_digest(self.size, total)
        if mine != digest:
            raise TransferRefused(
                f"{self.name}: digest mismatch (sender {digest}, received {mine})"
            )
        if os.fstat(self._require_open()).st_size != self.size:
            raise TransferRefused(f"{self.name}: partial file changed size while receiving")
        self.digest = mine
        return mine

    @property
    def bytes_written(self) -> int:
        with self._lock:
            return sum(n for n, _ in self.journal.entries.values())

    def finish(self) -> None:
        """Make the verified data durable before it may be renamed into place."""
        os.fsync(self._require_open())
        self._raise_writeback_error()

    def _raise_writeback_error(self) -> None:
        # The flusher waits through its own file description, so our fsync
        # sees a write-back error anyway; this also covers kernels that
        # would report it only once.
        if self._flusher is not None and self._flusher.error is not None:
            raise self._flusher.error

    def commit(self) -> None:
        """Rename into place; the journal goes too (its entries stay in memory)."""
        if self.digest is None:
            raise RuntimeError(f"{self.name}: commit before a successful check")
        os.rename(self.part_path, self.final_path)
        self.journal.remove()

    def uncommit(self) -> None:
        """Undo :meth:`commit` (the sender never learnt of success): a retry
        then finds everything verified and only has to finish again."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.final_path, self.part_path)
        self.journal.create(self.journal.entries)

    def close(self, sync: bool = False) -> None:
        """Release descriptors, keeping the partial file and journal for a resume.

        With ``sync`` the data is flushed first and the journal marked, so
        the resume need not re-read what was received."""
        if sync and self._fd is not None and self.digest is None:
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)
                self._raise_writeback_error()
                self.journal.mark_synced()
        self.journal.close()
        if self._flusher is not None:
            flusher, self._flusher = self._flusher, None
            flusher.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        """Remove the partial file and the journal (safe at any point)."""
        self.close()
        self.journal.remove()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part_path)

    def _require_open(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.name}: part file is not open")
        return self._fd


def discard_partials(directory: Path, names: list[str]) -> None:
    """Remove ``<name>.part`` and ``<name>.journal`` for each name, if present."""
    for name in names:
        for suffix in (PART_SUFFIX, JOURNAL_SUFFIX):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(directory / (name + suffix))


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
