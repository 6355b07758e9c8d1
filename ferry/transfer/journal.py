"""The receiver's record of verified segments: ``<name>.journal`` next to ``<name>.part``.

Layout::

    magic b"FERRYJ2\\n" | u32 length | JSON {"migration_uuid", "size", "chunk_size"}
    record*  = u64 segment | u32 bytes | 16-byte sum | u32 crc32(previous 28 bytes)

A record is appended after the segment's runs were checksum-verified and
written into the partial file; ``bytes == 0`` means the segment was
cleared (it holds only zeros now).  The last record for a segment wins.
A record for segment ``SYNCED`` (2**64 - 1) is a marker: the partial file
was fdatasynced after every record before it was written.

Records are not fsynced one by one (that would cost a disk flush per
chunk).  A record before the last marker is trusted as is; a record after
it (the receiver died, or the host crashed) is trusted *only after
re-verification*: the partial file's segment is re-hashed against it (see
:meth:`ferry.transfer.sink.PartFile.open`), so data that never reached the
disk, or a torn last record, is simply dropped and sent again.  A transfer
cut by the network (the common case) closes its files cleanly, writes the
marker, and resumes without re-reading anything on the receiver.  The
header binds the journal to its migration, file size and chunk size:
anything else starts from scratch.

To add a field per segment, bump the magic and extend ``_RECORD``; old
journals are then ignored, which only costs a full resend.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

MAGIC = b"FERRYJ2\n"
SYNCED = 2**64 - 1
_LEN = struct.Struct(">I")
_BODY = struct.Struct(">QI16s")
_RECORD = struct.Struct(">QI16sI")
_MAX_HEADER = 4096


class Journal:
    """Append-only record of verified segments; ``entries`` is the live view."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.entries: dict[int, tuple[int, int]] = {}  # segment -> (bytes, sum)
        self._fd: int | None = None

    @staticmethod
    def load(path: Path, header: dict[str, Any]) -> dict[int, tuple[int, int]] | None:
        """Records of the journal at ``path`` if its header equals ``header``.

        Returns None when there is no usable journal (missing, foreign or
        corrupt header).  Reading stops at the first torn or corrupt record.
        """
        found = Journal.load_marked(path, header)
        return None if found is None else found[0]

    @staticmethod
    def load_marked(
        path: Path, header: dict[str, Any]
    ) -> tuple[dict[int, tuple[int, int]], set[int]] | None:
        """Like :meth:`load`, plus the segments whose last record precedes the
        last sync marker (their data is known to be on disk)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
            return None
        (hlen,) = _LEN.unpack_from(data, len(MAGIC))
        start = len(MAGIC) + _LEN.size
        if hlen > _MAX_HEADER:
            return None
        try:
            found = json.loads(data[start : start + hlen])
        except ValueError:
            return None
        if found != header:
            return None
        entries: dict[int, tuple[int, int]] = {}
        unsynced: set[int] = set()
        pos = start + hlen
        while pos + _RECORD.size <= len(data):
            seg, nbytes, raw_sum, crc = _RECORD.unpack_from(data, pos)
            if zlib.crc32(data[pos : pos + _BODY.size]) != crc:
                break
            pos += _RECORD.size
            if seg == SYNCED:
                unsynced.clear()
                continue
            unsynced.add(seg)
            if nbytes:
                entries[seg] = (nbytes, int.from_bytes(raw_sum, "big"))
            else:
                entries.pop(seg, None)
        return entries, set(entries) - unsynced

    def create(self, entries: dict[int, tuple[int, int]]) -> None:
        """Write a fresh journal holding ``entries`` (atomically) and open it for appends."""
        self.close()
        body = json.dumps(self.header, sort_keys=True).encode()
        blob = bytearray(MAGIC + _LEN.pack(len(body)) + body)
        for seg, (nbytes, chunk_sum) in sorted(entries.items()):
            blob += self._record(seg, nbytes, chunk_sum)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.entries = dict(entries)

    def record(self, segment: int, nbytes: int, chunk_sum: int) -> None:
        """Append one record (thread-safe: O_APPEND writes of 32 bytes do not interleave)."""
        if self._fd is None:
            raise RuntimeError("journal is not open")
        os.write(self._fd, self._record(segment, nbytes, chunk_sum))
        if nbytes:
            self.entries[segment] = (nbytes, chunk_sum)
        else:
            self.entries.pop(segment, None)

    def mark_synced(self) -> None:
        """Record that the partial file was fdatasynced after every record so far."""
        if self._fd is not None:
            os.write(self._fd, self._record(SYNCED, 0, 0))

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @staticmethod
    def _record(segment: int, nbytes: int, chunk_sum: int) -> bytes:
        body = _BODY.pack(segment, nbytes, chunk_sum.to_bytes(16, "big"))
        return body + struct.pack(">I", zlib.crc32(body))
