"""Linux calls the ``os`` module lacks, through ctypes, with portable fallbacks.

* :func:`punch_hole` turns a range back into a hole (used when a segment
  that was journaled must be replaced by different or no data);
* :class:`Writeback` writes a file's new data to disk while the transfer
  goes on (``sync_file_range``), so the fsync before the final rename has
  little left to do, and drops the written pages from the page cache once
  they are on disk (*drop-behind*), so a migration does not fill the
  destination's memory with a disk its guest reads with ``cache=none``.

Both are best effort: on failure they fall back (zeros written) or do
nothing; durability always comes from the caller's own fsync.  To add
another hint, give :class:`Writeback` a step in :meth:`Writeback._settle`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import queue
import threading

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4

_libc: ctypes.CDLL | None = None
with contextlib.suppress(OSError, TypeError, AttributeError):
    # The symbols of the running process, libc included: not
    # ctypes.util.find_library, which runs ``ldconfig -p`` in a subprocess
    # (~45 ms on every start of a sender or an agent).
    _libc = ctypes.CDLL(None, use_errno=True)
    for _name in ("fallocate", "sync_file_range"):
        _fn = getattr(_libc, _name)
        _fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        _fn.restype = ctypes.c_int
    _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Make ``[offset, offset+length)`` read as zeros, deallocating it if possible."""
    if length <= 0:
        return
    if _libc is not None:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _libc.fallocate(fd, mode, offset, length) == 0:
            return
    zeros = bytes(min(length, 1 << 20))
    done = 0
    while done < length:
        done += os.pwrite(fd, zeros[: length - done], offset + done)


class Writeback:
    """Background write-out and drop-behind of the ranges written to one file.

    :meth:`submit` queues a range that was just written (never blocks: when
    the queue is full the hint is dropped and the final fsync does the
    work).  A thread asks the kernel to start writing each range at once
    (``SYNC_FILE_RANGE_WRITE``) and, once more than ``lag`` bytes are in
    flight, waits for the oldest range to reach the disk and drops its
    pages (``POSIX_FADV_DONTNEED``): the pages freed are the ones the next
    writes reuse, so the page cache a transfer holds stays around ``lag``
    bytes instead of growing with the disk.  (Measured on the benchmark VM,
    writing 1.5 GiB with ``pwrite``: 0.5-0.6 CPU seconds with drop-behind,
    2.3-3.6 without, where every new page is fresh memory.)

    The thread waits through a file description of its own (reopened via
    ``/proc/self/fd``): a write-back error is reported once per open file
    description, and the flusher must not be the one to consume the error
    that the caller's fsync has to see.  Errors it does see are kept in
    :attr:`error` too, and the caller checks them with its fsync
    (belt and braces).  Call :meth:`close` before closing the file.
    """

    def __init__(self, fd: int, lag: int = 64 * 1024 * 1024, drop_behind: bool = True) -> None:
        self.lag = lag
        self.drop_behind = drop_behind
        self.error: OSError | None = None
        self._fd: int | None = None
        self._requests: queue.Queue[tuple[int, int] | None] = queue.Queue(maxsize=256)
        self._thread: threading.Thread | None = None
        self._closing = False
        if _libc is None:
            return
        try:
            self._fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no /proc: no hints, the fsync does all the work
        if os.fstat(self._fd).st_ino != os.fstat(fd).st_ino:
            os.close(self._fd)
            self._fd = None
            return
        self._thread = threading.Thread(target=self._loop, name="ferry-writeback", daemon=True)
        self._thread.start()

    def submit(self, offset: int, length: int) -> None:
        if self._thread is None or length <= 0:
            return
        with contextlib.suppress(queue.Full):
            self._requests.put_nowait((offset, length))

    def close(self) -> None:
        """Stop the thread and release its descriptor.

        Queued hints are abandoned (after a fsync there is nothing left to
        write; after a failure the data is about to be deleted), so this
        waits at most for the one range being settled."""
        if self._thread is not None:
            self._closing = True
            with contextlib.suppress(queue.Full):
                self._requests.put_nowait(None)  # wakes an idle thread; a busy one sees the flag
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _loop(self) -> None:
        assert _libc is not None and self._fd is not None
        started: collections.deque[tuple[int, int]] = collections.deque()
        in_flight = 0
        while True:
            request = self._requests.get()
            if request is None or self._closing:
                return
            offset, length = request
            _libc.sync_file_range(self._fd, offset, length, _SYNC_FILE_RANGE_WRITE)
            started.append(request)
            in_flight += length
            while in_flight > self.lag and not self._closing:
                old_offset, old_length = started.popleft()
                in_flight -= old_length
                self._settle(old_offset, old_length)
            self._requests.task_done()  # lets a test wait for the queue to be handled

    def _settle(self, offset: int, length: int) -> None:
        """Wait for a range to be on disk, then let its pages go."""
        assert _libc is not None and self._fd is not None
        flags = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
        if _libc.sync_file_range(self._fd, offset, length, flags) != 0:
            err = ctypes.get_errno()
            if self.error is None:
                self.error = OSError(err, f"write-back failed: {os.strerror(err)}")
            return
        if self.drop_behind:
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_DONTNEED)
