"""Blocking frame I/O on one socket (plain TCP or TLS), used from worker threads.

The data path runs in threads with blocking sockets rather than on the
event loop: ``recv_into`` a reused buffer, ``preadv``, xxh3 and ``pwrite``
all release the GIL, so a few streams keep both cores busy without copying
every chunk through asyncio's stream buffers.  Measured on the benchmark's
disk (a), 1.5 GiB: v1 (asyncio streams, one connection) 3.5-5.6 s and
3.5-4.8 CPU seconds; this path 1.0-2.3 s and 1.4-2.9 CPU seconds (the
spread is other load on the test machine).

:class:`Wire` reads exact lengths into caller buffers, sends whole frames,
and can tell whether a frame is waiting (``ready``), which the sender uses to
pick up acks between chunks without a second thread.  ``abort`` may be
called from any thread: it shuts the socket down so a thread blocked in
``recv`` or ``send`` returns at once with an error.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from typing import Any

from .errors import ProtocolError
from .protocol import FRAME, decode_json, frame_limit


class Wire:
    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        sock.settimeout(timeout)
        self._head = bytearray(FRAME.size)
        self.sent = 0  # bytes handed to the kernel, framing included
        self.received = 0
        self.closed = False

    def settimeout(self, timeout: float) -> None:
        self.sock.settimeout(timeout)

    def recv_into(self, view: memoryview) -> None:
        """Fill ``view`` exactly; EOFError if the peer closed first."""
        got = 0
        n = len(view)
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise EOFError("connection closed by peer")
            got += k
        self.received += n

    def recv_bytes(self, n: int) -> bytes:
        buf = bytearray(n)
        self.recv_into(memoryview(buf))
        return bytes(buf)

    def read_head(self) -> tuple[bytes, int]:
        """Read a frame prefix; the length is checked against the kind's limit
        before anything is allocated for the body."""
        self.recv_into(memoryview(self._head))
        kind, length = FRAME.unpack(self._head)
        if length > frame_limit(kind):
            raise ProtocolError(f"{kind!r} frame of {length} bytes exceeds its limit")
        return kind, length

    def read_frame(self) -> tuple[bytes, bytes]:
        kind, length = self.read_head()
        return kind, self.recv_bytes(length) if length else b""

    def read_json(self, want: bytes) -> dict[str, Any]:
        kind, body = self.read_frame()
        if kind != want:
            raise ProtocolError(f"expected a {want!r} frame, got {kind!r}")
        return decode_json(kind, body)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def ready(self) -> bool:
        """True if bytes can be read now without blocking."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        # poll, not select: select() refuses descriptors >= 1024 (FD_SETSIZE),
        # which a busy compute process (guests, AMQP, libvirt) easily reaches.
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def abort(self) -> None:
        """Wake up any thread blocked on this socket (safe from any thread)."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


def tune(sock: socket.socket) -> None:
    """Socket options for bulk transfer: large buffers, no Nagle delay on
    the small ack and control frames."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
