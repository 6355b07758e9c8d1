"""Transfer progress: counters updated by stream threads, snapshots for callers.

:class:`Counters` is written by the sender's stream threads (under a lock)
and read by the progress task on the event loop, which turns it into a
:class:`Progress` snapshot at least once a second: bytes done and total for
the whole transfer and per file, rate (bytes/s over a sliding window of a
few seconds, so a pause shows quickly) and ETA.  ``done`` counts allocated
source bytes that the receiver holds verified (sent and acked, or found in
its journal on resume), so it never goes backwards across retries.

To report something new (e.g. compression ratio), add a counter here,
bump it where the event happens in :mod:`.sender`, and copy it into
:class:`Progress`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileProgress:
    done: int
    total: int


@dataclass(frozen=True)
class Progress:
    done: int  # allocated bytes verified on the destination
    total: int  # allocated bytes of all files
    rate: float  # bytes/s over the last few seconds
    eta: float | None  # seconds left at that rate (None while unknown)
    elapsed: float
    bytes_sent: int  # payload bytes put on the wire, all attempts
    attempt: int
    files: dict[str, FileProgress] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * self.done / self.total


class Counters:
    """Thread-safe tallies for one send_files call (all attempts)."""

    def __init__(self, totals: dict[str, int]) -> None:
        self._lock = threading.Lock()
        self.totals = totals
        self.names = list(totals)
        self._file_done = [0] * len(self.names)
        self._best = [0] * len(self.names)  # high-water mark across attempts
        self.payload_sent = 0  # bytes of chunk payloads sent (after compression)
        self.raw_sent = 0  # the same chunks before compression
        self.wire_sent = 0  # everything handed to sockets, framing included
        self.chunks_sent = 0
        self.chunks_compressed = 0
        self.chunks_resent = 0  # re-sent after a checksum mismatch
        self.skipped = 0  # bytes found verified in the receiver's journal
        self.attempt = 0

    def new_attempt(self) -> None:
        with self._lock:
            self.attempt += 1
            self._file_done = [0] * len(self.names)

    def verified(self, file: int, allocated: int, skipped: bool) -> None:
        with self._lock:
            self._file_done[file] += allocated
            if self._file_done[file] > self._best[file]:
                self._best[file] = self._file_done[file]
            if skipped:
                self.skipped += allocated

    def sent(self, payload: int, raw: int, wire: int, compressed: bool, resend: bool) -> None:
        with self._lock:
            self.payload_sent += payload
            self.raw_sent += raw
            self.wire_sent += wire
            self.chunks_sent += 1
            self.chunks_compressed += compressed
            self.chunks_resent += resend

    def files(self) -> dict[str, FileProgress]:
        with self._lock:
            return {
                n: FileProgress(min(self._best[i], self.totals[n]), self.totals[n])
                for i, n in enumerate(self.names)
            }


class Meter:
    """Turns counters into Progress snapshots with a sliding-window rate."""

    def __init__(self, counters: Counters, window: float = 5.0) -> None:
        self.counters = counters
        self.window = window
        self.started = time.monotonic()
        # Seeded with the start, so the first snapshot already has a rate.
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def snapshot(self) -> Progress:
        now = time.monotonic()
        files = self.counters.files()
        done = sum(f.done for f in files.values())
        total = sum(f.total for f in files.values())
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        eta = (total - done) / rate if rate > 0 else (0.0 if done >= total else None)
        return Progress(
            done=done,
            total=total,
            rate=rate,
            eta=eta,
            elapsed=now - self.started,
            bytes_sent=self.counters.payload_sent,
            attempt=self.counters.attempt,
            files=files,
        )
