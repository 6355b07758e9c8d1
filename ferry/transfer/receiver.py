"""One connection on the receiving side, served by its own thread.

:func:`serve` runs the conversation of :mod:`.protocol` for one socket:

1. TLS handshake if configured, then the hello, within ``header_timeout``;
   nothing touches the disk before the hello is valid, the token is open for
   that migration, the manifest matches the grant exactly and the files fit;
2. a control hello starts a :class:`~ferry.transfer.session.Session` (via
   the server, which supersedes an older attempt of the same grant) and is
   answered with the journal of verified segments; a data hello joins it;
3. chunks are verified, written and acked; the finish frame (control only)
   commits, and the verdict is sent.

Refusals are sent as a result frame on the connection that hit them.  When
a session fails, every other stream thread sends the refusal on its own
connection at its next frame boundary (only the owner thread ever writes to
a socket, so frames never interleave); the session aborts connections that
stay silent for a second.  To add per-connection policy, extend
:func:`_serve_chunks`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from .codec import AVAILABLE as ZSTD_AVAILABLE
from .errors import ProtocolError, TransferBusy, TransferRefused
from .protocol import (
    CHUNK,
    KIND_ACCEPT,
    KIND_CHUNK,
    KIND_FINISH,
    KIND_HEADER,
    RUN,
    Hello,
    decode_json,
    encode_ack,
    encode_journal,
    encode_json,
    encode_result,
    parse_chunk_header,
    parse_hello,
    parse_runs,
)
from .session import Session, outcome_of
from .wire import Wire, tune

if TYPE_CHECKING:
    from .server import TransferServer

log = logging.getLogger(__name__)

# How long we keep reading (and discarding) after refusing, so the peer gets
# to read our error frame instead of a connection reset.
_LINGER_SECONDS = 5.0


class _Quiet(Exception):
    """Connection closed before a hello (a reachability probe): not a warning."""


def serve(server: TransferServer, sock: socket.socket, peer: Any) -> None:
    wire: Wire | None = None
    session: Session | None = None
    started = time.monotonic()
    try:
        sock.setblocking(True)
        tune(sock)
        sock.settimeout(server.header_timeout)
        if server.ssl_context is not None:
            sock = server.ssl_context.wrap_socket(sock, server_side=True)
            server.track(sock)  # the TLS socket now owns the descriptor
        wire = Wire(sock, server.header_timeout)
        hello = _read_hello(wire)
        grant = server.registry.open(hello.token, hello.migration_uuid)
        session = (
            server.start_session(grant, hello)
            if hello.role == "control"
            else (server.join_session(hello))
        )
        if not session.attach(wire):
            raise TransferBusy("the transfer attempt ended; retry")
        try:
            _greet(wire, session, hello)
            wire.settimeout(server.idle_timeout)
            _serve_chunks(server, wire, session, control=hello.role == "control")
        except BaseException as exc:
            # Decide the session's fate before leaving it, sparing this
            # connection so the refusal can still be sent on it.
            session.end(*outcome_of(exc), spare=wire)
            raise
        finally:
            session.detach(wire)
        if session.outcome == "ok" and hello.role == "control":
            log.info(
                "received %d file(s) for migration %s from %s in %.2fs",
                len(session.parts),
                grant.migration_uuid,
                peer,
                time.monotonic() - started,
            )
    except _Quiet:
        log.debug("connection from %s closed before sending a hello", peer)
    except TransferRefused as exc:
        log.warning("refused transfer from %s: %s", peer, exc.reason)
        if wire is not None:
            _refuse(wire, exc.reason, retry=isinstance(exc, TransferBusy))
    except (EOFError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
        if session is not None and not server.stopping:
            log.info(
                "transfer from %s interrupted (%s); partials kept for resume",
                peer,
                outcome_of(exc)[1],
            )
    except OSError as exc:
        log.exception("transfer from %s failed on local I/O", peer)
        if wire is not None:
            _refuse(wire, f"receiver I/O error: {exc}", retry=False)
    except Exception as exc:
        log.exception("transfer from %s failed", peer)
        if wire is not None:
            _refuse(wire, f"receiver internal error: {type(exc).__name__}", retry=False)
    finally:
        if wire is not None:
            wire.close()
        else:
            sock.close()


def _read_hello(wire: Wire) -> Hello:
    try:
        kind, body = wire.read_frame()
    except EOFError:
        if wire.received == 0:
            raise _Quiet from None
        raise
    if kind != KIND_HEADER:
        raise ProtocolError(f"expected a header frame, got {kind!r}")
    return parse_hello(body)


def _greet(wire: Wire, session: Session, hello: Hello) -> None:
    if hello.role == "control":
        for file, entries in session.journal():
            for frame in encode_journal(file, entries):
                wire.send(frame)
    accept = {
        "ok": True,
        "session": session.id,
        "chunk_size": session.chunk_size,
        "compression": "zstd" in hello.compression and ZSTD_AVAILABLE,
    }
    wire.send(encode_json(KIND_ACCEPT, accept))


def _serve_chunks(server: TransferServer, wire: Wire, session: Session, control: bool) -> None:
    buf = bytearray(session.chunk_size)
    limiters = [server.limiter, *([session.limiter] if session.limiter else [])]
    while True:
        if session.outcome == "failed":
            # Another stream hit a refusal: tell our sender too.
            raise TransferRefused(session.reason)
        try:
            kind, length = wire.read_head()
        except EOFError:
            if control:
                raise
            return  # a data stream closed after its last ack: normal
        if kind == KIND_CHUNK:
            fixed = wire.recv_bytes(CHUNK.size)
            file, flags, seg, chunk_sum, raw_len, payload_len, nruns = parse_chunk_header(fixed)
            runs = parse_runs(wire.recv_bytes(RUN.size * nruns), nruns) if nruns else ()
            if length != CHUNK.size + RUN.size * nruns + payload_len or payload_len > len(buf):
                raise ProtocolError("chunk length does not match its header")
            for bucket in limiters:
                bucket.take(payload_len, lambda: wire.closed)
            wire.recv_into(memoryview(buf)[:payload_len])
            status = session.chunk(file, flags, seg, chunk_sum, raw_len, runs, buf, payload_len)
            wire.send(encode_ack(file, seg, status))
        elif kind == KIND_FINISH and control:
            claims = decode_json(kind, wire.recv_bytes(length))
            result = session.finish(claims)
            try:
                wire.send(encode_result(True, result))
            except OSError:
                session.uncommit()  # the sender will retry and find it all verified
                raise
            server.registry.complete(session.token)
            session.end("ok", "complete", spare=wire)
            return
        else:
            raise ProtocolError(f"unexpected {kind!r} frame during the transfer")


def _refuse(wire: Wire, reason: str, retry: bool) -> None:
    """Send the verdict, then read and discard until the peer closes.

    Closing a socket with unread input makes the kernel send a reset, which
    can destroy our error frame before the sender reads it.
    """
    with contextlib.suppress(OSError, ValueError):
        wire.settimeout(_LINGER_SECONDS)
        wire.send(encode_result(False, error=reason, retry=retry))
        with contextlib.suppress(OSError):
            wire.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER_SECONDS
        sink = bytearray(256 * 1024)
        while time.monotonic() < deadline and wire.sock.recv_into(sink):
            pass
