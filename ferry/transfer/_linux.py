"""Linux calls the ``os`` module lacks, through ctypes, with portable fallbacks.

* :func:`punch_hole` turns a range back into a hole (used when a segment
  that was journaled must be replaced by different or no data);
* :func:`start_writeback` asks the kernel to start writing a range to disk
  now (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so the fsync before the
  final rename has little left to do: the disk works while the network does.

Both are best effort: on failure they fall back (zeros written) or do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import threading

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_SYNC_FILE_RANGE_WRITE = 2

_libc: ctypes.CDLL | None = None
with contextlib.suppress(OSError, TypeError):
    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
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


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask for ``[offset, offset+length)`` to be written out soon, without waiting.

    The request is queued to one flusher thread per process, because
    ``sync_file_range`` blocks while the device queue is full and the stream
    threads must keep receiving meanwhile.  It is only a hint: when the
    queue is full the request is dropped (the final fsync writes it anyway),
    and errors (e.g. a descriptor closed in between) are ignored.
    """
    if _libc is None or length <= 0:
        return
    global _flusher
    if _flusher is None or not _flusher.is_alive():
        with _flusher_lock:
            if _flusher is None or not _flusher.is_alive():
                _flusher = threading.Thread(target=_flush_loop, name="ferry-writeback", daemon=True)
                _flusher.start()
    with contextlib.suppress(queue.Full):
        _requests.put_nowait((fd, offset, length))


_requests: queue.Queue[tuple[int, int, int]] = queue.Queue(maxsize=256)
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()


def _flush_loop() -> None:
    assert _libc is not None
    while True:
        fd, offset, length = _requests.get()
        _libc.sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
