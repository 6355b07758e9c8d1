"""Receiver-side state of one transfer attempt: the files of one grant, shared by its streams.

A :class:`Session` is created by the control connection of an attempt
(after the token, manifest and free space were checked), opens or resumes
one :class:`~ferry.transfer.sink.PartFile` per file, and is joined by the
attempt's data connections.  Every stream thread calls :meth:`chunk` for the
chunks it reads; the control thread calls :meth:`finish` when the sender
claims it is done.

A session ends in one of three ways, and the last thread to leave applies it:

* ``ok``: files verified, fsynced and renamed into place, token burnt;
* ``transient`` (connection lost, timeout, server stopping, superseded by a
  newer attempt): files fdatasynced and closed, the journal marked synced,
  ``.part`` and journal kept for the resume;
* ``failed`` (refusal: digest mismatch, disk full, protocol violation,
  grant revoked): ``.part`` and journal removed.

To add per-session policy (quotas, metrics), extend :meth:`chunk`; it sees
every verified chunk before it is written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import ssl
import threading
import time
from typing import Any

from .codec import decompress
from .digest import sum_runs
from .errors import ProtocolError, TransferBusy, TransferRefused
from .journal import Journal
from .protocol import ACK_OK, ACK_RESEND, FLAG_ZSTD, Hello
from .ratelimit import TokenBucket
from .sink import PartFile, discard_partials, fsync_directory
from .tokens import TransferGrant
from .wire import Wire

log = logging.getLogger(__name__)

# How long the other streams of a failed session get to pass the refusal on.
_LINGER = 1.0
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Session:
    def __init__(self, grant: TransferGrant, token: str, hello: Hello, file_mode: int) -> None:
        self.id = secrets.token_urlsafe(12)
        self.grant = grant
        self.token = token
        self.hello = hello
        self.chunk_size = hello.chunk_size
        self.parts = [
            PartFile(
                grant.directory, f.name, f.size, hello.chunk_size, grant.migration_uuid, file_mode
            )
            for f in hello.files
        ]
        self.paths = {grant.directory / f.name for f in hello.files}
        self.limiter = TokenBucket(grant.rate_limit) if grant.rate_limit else None
        self.outcome: str | None = None  # None while running, then ok/transient/failed
        self.reason = ""
        self._lock = threading.Lock()
        self._wires: set[Wire] = set()
        self._refs = 0
        self._closed = threading.Event()
        self._committed = False

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        """Prepare the directory and open (or resume) every partial file (blocking)."""
        directory = self.grant.directory
        directory.mkdir(parents=True, exist_ok=True)
        if not self.grant.replace_existing:
            existing = sorted(p.name for p in self.parts if os.path.lexists(p.final_path))
            if existing:
                raise TransferRefused(f"destination files already exist: {existing}")
        self._check_space()
        opened: list[PartFile] = []
        try:
            for part in self.parts:
                part.open()
                opened.append(part)
        except BaseException:
            for part in opened:
                part.close()
            raise

    def _check_space(self) -> None:
        # Refuse up front what cannot fit, rather than fail half way (and
        # before creating any file).  Journaled bytes count as present.
        have = {}
        for p in self.parts:
            entries = Journal.load(p.journal.path, p.journal.header) or {}
            have[p.name] = sum(n for n, _ in entries.values())
        need = sum(max(0, f.allocated - have[f.name]) for f in self.hello.files)
        st = os.statvfs(self.grant.directory)
        free = st.f_bavail * st.f_frsize
        if need > free:
            raise TransferRefused(
                f"not enough space on the destination: need {need} bytes, {free} free"
            )

    def journal(self) -> list[tuple[int, list[tuple[int, int, int]]]]:
        """Verified segments per file index, for the sender to skip."""
        return [
            (i, [(seg, n, s) for seg, (n, s) in sorted(p.journal.entries.items())])
            for i, p in enumerate(self.parts)
            if p.journal.entries
        ]

    def attach(self, wire: Wire) -> bool:
        with self._lock:
            if self.outcome is not None:
                return False
            self._refs += 1
            self._wires.add(wire)
            return True

    def detach(self, wire: Wire) -> None:
        with self._lock:
            self._wires.discard(wire)
            self._refs -= 1
            last = self._refs == 0
            if last and self.outcome is None:
                # Every stream left without a verdict: the sender went away.
                self.outcome, self.reason = "transient", "all connections closed"
        if last:
            self._release()

    def end(
        self, outcome: str, reason: str, spare: Wire | None = None, linger: bool = True
    ) -> None:
        """Decide the outcome (first decision wins) and wake every stream thread
        but ``spare`` (whose thread is the caller and still has a verdict to send).

        A refusal (``failed``) gives the other streams ``_LINGER`` seconds to
        send it on their own connections at their next frame boundary (see
        :mod:`.receiver`) before their sockets are shut; anything else, or
        ``linger=False``, shuts them at once.
        """
        with self._lock:
            if self.outcome is None:
                self.outcome, self.reason = outcome, reason
            wires = [w for w in self._wires if w is not spare]
            idle = self._refs == 0
        if self.outcome == "failed" and linger and wires:
            timer = threading.Timer(_LINGER, _abort_all, args=(wires,))
            timer.daemon = True
            timer.start()
        else:
            _abort_all(wires)
        if idle:
            self._release()

    def revoke(self) -> None:
        """The grant is gone: whatever was decided, the partial files must go."""
        with self._lock:
            if self.outcome == "ok":
                return  # complete: the files belong to the instance now
            self.outcome, self.reason = "failed", "transfer grant revoked"
            wires = list(self._wires)
            idle = self._refs == 0
        for wire in wires:
            wire.abort()
        if self._closed.is_set():
            discard_partials(self.grant.directory, [p.name for p in self.parts])
        elif idle:
            self._release()

    def wait_closed(self, timeout: float) -> bool:
        return self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def committed(self) -> bool:
        """Files renamed into place; the verdict is being (or was) delivered."""
        return self._committed

    def _release(self) -> None:
        if self._closed.is_set():
            return
        try:
            if self.outcome == "failed":
                for part in self.parts:
                    part.discard()
                    if self._committed:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(part.final_path)
                discard_partials(self.grant.directory, [p.name for p in self.parts])
            elif self.outcome == "ok":
                for part in self.parts:
                    part.close()
            else:
                for part in self.parts:
                    part.close(sync=self.outcome == "transient")
        finally:
            self._closed.set()

    # -- data ------------------------------------------------------------------

    def chunk(
        self,
        file: int,
        flags: int,
        segment: int,
        chunk_sum: int,
        raw_len: int,
        runs: tuple[tuple[int, int], ...],
        payload: bytearray,
        payload_len: int,
    ) -> int:
        """Verify one chunk and write it; returns the ack status."""
        if file >= len(self.parts):
            raise ProtocolError(f"chunk for unknown file index {file}")
        part = self.parts[file]
        _, seg_len = part.segment_bounds(segment)
        _check_runs(runs, seg_len, raw_len)
        data: bytearray | bytes = payload
        if flags & FLAG_ZSTD:
            try:
                data = decompress(memoryview(payload)[:payload_len], raw_len)
            except ValueError:
                return ACK_RESEND  # corrupt in transit: ask again
        elif payload_len != raw_len:
            raise ProtocolError("raw chunk payload length differs from its runs")
        if sum_runs(data, segment * self.chunk_size, seg_len, runs) != chunk_sum:
            return ACK_RESEND  # never written: the sender reads and sends it again
        pieces: list[tuple[int, memoryview]] = []
        view = memoryview(data)
        pos = 0
        for rel, length in runs:
            pieces.append((rel, view[pos : pos + length]))
            pos += length
        try:
            part.write(segment, pieces, raw_len, chunk_sum)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise TransferRefused(
                    f"destination disk full while writing {part.name!r}: {exc.strerror}"
                ) from exc
            raise
        return ACK_OK

    # -- completion --------------------------------------------------------------

    def finish(self, claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Check every file against the sender's claims, fsync and rename into place."""
        files = claims.get("files")
        if not isinstance(files, dict) or set(files) != {p.name for p in self.parts}:
            raise ProtocolError("finish frame does not list exactly the files of the transfer")
        for part in self.parts:
            claim = files[part.name]
            if not isinstance(claim, dict):
                raise ProtocolError(f"finish frame: bad entry for {part.name!r}")
            part.check(
                int(claim.get("segments", -1)),
                int(claim.get("bytes", -1)),
                str(claim.get("digest")),
            )
        synced = time.monotonic()
        for part in self.parts:
            part.finish()
        log.debug("fsync of %d file(s) took %.2fs", len(self.parts), time.monotonic() - synced)
        for part in self.parts:
            part.commit()
        self._committed = True
        fsync_directory(self.grant.directory)
        return {p.name: {"digest": p.digest, "bytes_written": p.bytes_written} for p in self.parts}

    def uncommit(self) -> None:
        """The verdict could not be delivered: put the files back as partials."""
        if self._committed:
            for part in self.parts:
                part.uncommit()
            self._committed = False


def _abort_all(wires: list[Wire]) -> None:
    for wire in wires:
        wire.abort()


def outcome_of(exc: BaseException) -> tuple[str, str]:
    """How a session ends when ``exc`` escapes one of its connections."""
    if isinstance(exc, TransferBusy):
        return "transient", exc.reason
    if isinstance(exc, TransferRefused):
        return "failed", exc.reason
    if isinstance(exc, TimeoutError):
        return "transient", "timed out waiting for the sender"
    if isinstance(exc, EOFError | ConnectionError | ssl.SSLError):
        return "transient", f"connection lost: {exc}"
    if isinstance(exc, OSError):
        return "failed", f"receiver I/O error: {exc}"
    return "failed", f"receiver internal error: {type(exc).__name__}"


def _check_runs(runs: tuple[tuple[int, int], ...], seg_len: int, raw_len: int) -> None:
    # Runs are ascending, disjoint and inside the segment: nothing can be
    # written outside the range the segment index names.
    pos = total = 0
    for rel, length in runs:
        end = rel + length
        if rel < pos or length <= 0 or end > seg_len:
            raise ProtocolError(f"chunk run {rel}+{length} overlaps or is out of range")
        pos = end
        total += length
    if total != raw_len:
        raise ProtocolError("chunk runs do not add up to its length")
