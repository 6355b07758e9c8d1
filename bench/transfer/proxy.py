"""A counting TCP relay on loopback: how many bytes really crossed the socket.

Every tool is pointed at the relay instead of its server once per disk,
and the relay counts payload bytes in each direction for every connection
(TCP/IP headers are not counted: the same for every tool).  It moves data
with ``splice`` through a pipe (no copy into Python), one thread per
direction, so it costs little next to the tools themselves; timing runs do
not go through it anyway.

``cut_at`` makes it reset every connection once the client->server count
reaches that many bytes (once); the benchmark uses it to measure what a
resumed transfer re-sends.  To count something else (e.g. per connection),
extend :meth:`Relay._pump`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading

_F_SETPIPE_SZ = 1031
_CHUNK = 1 << 20


class Relay:
    def __init__(self, target: tuple[str, int], cut_at: int | None = None) -> None:
        self.target = target
        self.cut_at = cut_at
        self.up = 0  # client -> server
        self.down = 0
        self.connections = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._socks.update((client, server))
            pair = [client, server, 2]  # both sockets, pumps still running
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._run, args=(src, dst, up, pair), daemon=True).start()

    def _run(self, src: socket.socket, dst: socket.socket, up: bool, pair: list) -> None:
        try:
            self._pump(src, dst, up)
        finally:
            with self._lock:
                pair[2] -= 1
                last = pair[2] == 0
                if last:
                    self._socks.difference_update((src, dst))
            if last:  # only now: closing earlier could hand the fd to someone else
                src.close()
                dst.close()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        r, w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, _CHUNK)
        try:
            while True:
                n = os.splice(src.fileno(), w, _CHUNK)
                if n == 0:
                    break
                left = n
                while left:
                    left -= os.splice(r, dst.fileno(), left)
                cut = False
                with self._lock:
                    if up:
                        self.up += n
                        if self.cut_at is not None and self.up >= self.cut_at:
                            self.cut_at, cut = None, True
                    else:
                        self.down += n
                if cut:
                    self.cut()
                    return
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            self._reset(src, dst)
        finally:
            os.close(r)
            os.close(w)

    def cut(self) -> None:
        """Reset every open connection (as a link failure would)."""
        with self._lock:
            self.cuts += 1
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            self._reset(s)

    @staticmethod
    def _reset(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
