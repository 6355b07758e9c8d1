"""One attempt at sending a migration's files: connections, streams, acks, finish.

:class:`Attempt` runs in a worker thread.  It opens the control connection
(hello; the receiver answers with its journal of verified segments and a
session id), opens ``streams - 1`` data connections joining that session,
and runs one :class:`_Stream` thread per connection.  The streams share a
:class:`~ferry.transfer.segments.WorkQueue`; each takes a segment, reads
and sums it, skips it if the receiver's journal already holds the same sum,
and otherwise sends it as a chunk (compressed if that pays) after taking
its bytes from every rate limiter.  Up to ``window`` chunks per stream are
in flight; acks are picked up between chunks.  A chunk acked with "resend"
(checksum mismatch on arrival) is read and sent again, at most
``max_resends`` times.  When every stream is done, the control connection
carries the finish frame (per file: segments, bytes, digest) and waits for
the verdict.

Any failure aborts every connection of the attempt; the caller
(:mod:`.client`) decides whether to retry.  Exceptions are mapped so that
network trouble is a :class:`TransientTransferError` and decisions are
:class:`TransferRefused`.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from .codec import AVAILABLE as ZSTD_AVAILABLE
from .codec import Compressor
from .digest import MASK, finish_digest
from .errors import (
    ProtocolError,
    TransferBusy,
    TransferError,
    TransferRefused,
    TransientTransferError,
)
from .progress import Counters
from .protocol import (
    ACK_OK,
    ACK_RESEND,
    FLAG_ZSTD,
    KIND_ACCEPT,
    KIND_ACK,
    KIND_FINISH,
    KIND_JOURNAL,
    KIND_RESULT,
    ChunkHeader,
    Hello,
    ManifestEntry,
    chunk_prefix,
    decode_json,
    encode_hello,
    encode_json,
    parse_ack,
    parse_journal,
)
from .ratelimit import TokenBucket
from .segments import Segment, Source, WorkQueue, load
from .wire import Wire, tune


@dataclass
class SendOptions:
    streams: int = 2
    chunk_size: int = 4 * 1024 * 1024
    compress: bool = False
    window: int = 2  # chunks in flight per stream: enough to keep the pipe full,
    # and what a cut connection may lose (resent on resume)
    max_resends: int = 3
    connect_timeout: float = 30.0
    idle_timeout: float = 600.0
    ssl_context: ssl.SSLContext | None = None
    limiters: list[TokenBucket] = field(default_factory=list)


@dataclass
class _FileTally:
    segments: int = 0
    nbytes: int = 0
    sum: int = 0


class Attempt:
    def __init__(
        self,
        address: tuple[str, int],
        token: str,
        migration_uuid: str,
        sources: list[Source],
        opts: SendOptions,
        counters: Counters,
    ) -> None:
        self.address = address
        self.token = token
        self.migration_uuid = migration_uuid
        self.sources = sources
        self.opts = opts
        self.counters = counters
        self.wires: list[Wire] = []
        self.journal: list[dict[int, tuple[int, int]]] = [{} for _ in sources]
        self.tally = [_FileTally() for _ in sources]
        self._lock = threading.Lock()
        self.aborted = False
        self.compress = False

    # -- driver ---------------------------------------------------------------

    def run(self) -> dict[str, tuple[str, int]]:
        """Send everything; return the receiver's per-file verdict."""
        try:
            return self._run()
        except TransferError:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise TransferError(f"TLS: receiver certificate not trusted: {exc}") from exc
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise TransientTransferError(f"connection lost: {exc}") from exc
        except ssl.SSLError as exc:
            raise TransferError(f"TLS failure: {exc}") from exc
        except TimeoutError as exc:
            raise TransientTransferError("timed out waiting for the receiver") from exc
        except (EOFError, OSError) as exc:
            raise TransientTransferError(f"connection lost: {exc}") from exc
        finally:
            self.abort()
            for wire in self.wires:
                wire.close()

    def abort(self) -> None:
        """Stop everything now (from any thread): blocked calls error out."""
        self.aborted = True
        for wire in list(self.wires):
            wire.abort()

    def _run(self) -> dict[str, tuple[str, int]]:
        control = self._connect()
        manifest = tuple(ManifestEntry(s.name, s.size, s.allocated) for s in self.sources)
        offered = ("zstd",) if self.opts.compress and ZSTD_AVAILABLE else ()
        control.send(
            encode_hello(
                Hello(
                    "control",
                    self.token,
                    self.migration_uuid,
                    manifest,
                    self.opts.chunk_size,
                    self.opts.streams,
                    offered,
                )
            )
        )
        accept = self._read_accept(control, journal=True)
        session = str(accept.get("session", ""))
        self.compress = bool(offered) and accept.get("compression") is True
        for _ in range(self.opts.streams - 1):
            wire = self._connect()
            wire.send(encode_hello(Hello("data", self.token, self.migration_uuid, session=session)))
            self._read_accept(wire, journal=False)

        work = WorkQueue(self.sources, self.opts.chunk_size)
        streams = [_Stream(self, wire, work) for wire in self.wires]
        threads = [
            threading.Thread(target=s.run, name=f"ferry-send-{i}", daemon=True)
            for i, s in enumerate(streams)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [s.error for s in streams if s.error is not None]
        if errors:
            # The first failure caused the others (we aborted their sockets).
            first = next((e for e in errors if isinstance(e, TransferRefused)), errors[0])
            raise first
        for src in self.sources:
            if src.changed():
                raise TransferError(f"{src.name!r} changed while it was being sent")
        claims: dict[str, dict[str, Any]] = {
            src.name: {
                "segments": t.segments,
                "bytes": t.nbytes,
                "digest": finish_digest(src.size, t.sum),
            }
            for src, t in zip(self.sources, self.tally, strict=True)
        }
        control.send(encode_json(KIND_FINISH, {"files": claims}))
        kind, body = control.read_frame()
        if kind != KIND_RESULT:
            raise ProtocolError(f"receiver concluded with a {kind!r} frame")
        result = decode_json(kind, body)
        _raise_if_refused(result)
        self._check_result(result, claims)
        return {n: (c["digest"], c["bytes"]) for n, c in claims.items()}

    def _connect(self) -> Wire:
        sock = socket.create_connection(self.address, timeout=self.opts.connect_timeout)
        try:
            tune(sock)
            if self.opts.ssl_context is not None:
                sock = self.opts.ssl_context.wrap_socket(sock, server_hostname=self.address[0])
            wire = Wire(sock, self.opts.idle_timeout)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self.wires.append(wire)
            if self.aborted:
                wire.abort()
        return wire

    def _read_accept(self, wire: Wire, journal: bool) -> dict[str, Any]:
        while True:
            kind, body = wire.read_frame()
            if kind == KIND_JOURNAL and journal:
                file, entries = parse_journal(body)
                if file >= len(self.sources):
                    raise ProtocolError("journal frame for an unknown file")
                for seg, nbytes, chunk_sum in entries:
                    self.journal[file][seg] = (nbytes, chunk_sum)
            elif kind == KIND_ACCEPT:
                return decode_json(kind, body)
            elif kind == KIND_RESULT:
                _raise_if_refused(decode_json(kind, body))
                raise ProtocolError("receiver answered the hello with ok=true")
            else:
                raise ProtocolError(f"receiver answered the hello with a {kind!r} frame")

    def _check_result(self, result: dict[str, Any], claims: dict[str, dict[str, Any]]) -> None:
        files = result.get("files")
        if not isinstance(files, dict) or set(files) != set(claims):
            raise TransferError("receiver's result does not list the files sent")
        for name, info in files.items():
            ok = (
                isinstance(info, dict)
                and info.get("digest") == claims[name]["digest"]
                and info.get("bytes_written") == claims[name]["bytes"]
            )
            if not ok:
                raise TransferError(f"receiver's result for {name!r} does not match what was sent")

    def account(self, seg: Segment, nbytes: int, chunk_sum: int, skipped: bool) -> None:
        with self._lock:
            if nbytes:
                t = self.tally[seg.file]
                t.segments += 1
                t.nbytes += nbytes
                t.sum = (t.sum + chunk_sum) & MASK
        self.counters.verified(seg.file, seg.allocated, skipped)


class _Stream:
    """One connection: send chunks from the shared queue, collect their acks."""

    def __init__(self, attempt: Attempt, wire: Wire, work: WorkQueue) -> None:
        self.a = attempt
        self.wire = wire
        self.work = work
        self.buf = bytearray(attempt.opts.chunk_size)
        self.inflight: dict[tuple[int, int], tuple[Segment, int, int]] = {}
        self.resends: dict[tuple[int, int], int] = {}
        self.codec = Compressor() if attempt.compress else None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            window = self.a.opts.window
            while not self.a.aborted:
                seg = self.work.next()
                if seg is None:
                    break
                self._process(seg, resend=False)
                self._pump(block=len(self.inflight) >= window)
            while self.inflight and not self.a.aborted:
                self._pump(block=True)
        except BaseException as exc:
            self.error = exc
            self.a.abort()

    def _process(self, seg: Segment, resend: bool) -> None:
        src = self.a.sources[seg.file]
        loaded = load(src, seg, self.buf)
        have = self.a.journal[seg.file].get(seg.index)
        if have == (loaded.nbytes, loaded.sum) and not resend:
            self.a.account(seg, loaded.nbytes, loaded.sum, skipped=True)
            return
        if loaded.nbytes == 0 and have is None:
            self.a.account(seg, 0, 0, skipped=False)  # allocated but all zeros
            return
        view = memoryview(self.buf)
        pieces = [view[a:b] for a, b in loaded.runs]
        flags, payload_len = 0, loaded.nbytes
        packed = self.codec.compress(pieces, loaded.nbytes) if self.codec and pieces else None
        if packed is not None:
            flags, payload_len, pieces = FLAG_ZSTD, len(packed), [memoryview(packed)]
        runs = tuple((a, b - a) for a, b in loaded.runs)
        prefix = chunk_prefix(
            ChunkHeader(seg.file, flags, seg.index, loaded.sum, loaded.nbytes, payload_len, runs)
        )
        for bucket in self.a.opts.limiters:
            bucket.take(len(prefix) + payload_len, lambda: self.a.aborted)
        self.wire.send(prefix)
        for piece in pieces:
            self.wire.send(piece)
        self.a.counters.sent(
            payload_len, loaded.nbytes, len(prefix) + payload_len, packed is not None, resend
        )
        self.inflight[(seg.file, seg.index)] = (seg, loaded.nbytes, loaded.sum)

    def _pump(self, block: bool) -> None:
        """Handle acks: wait for one if ``block``, then take whatever is ready."""
        while self.inflight and (block or self.wire.ready()):
            block = False
            kind, body = self.wire.read_frame()
            if kind == KIND_RESULT:
                _raise_if_refused(decode_json(kind, body))
                raise ProtocolError("unexpected result frame in the middle of the transfer")
            if kind != KIND_ACK:
                raise ProtocolError(f"expected an ack, got a {kind!r} frame")
            file, index, status = parse_ack(body)
            entry = self.inflight.pop((file, index), None)
            if entry is None:
                raise ProtocolError(f"ack for a chunk not in flight ({file}, {index})")
            seg, nbytes, chunk_sum = entry
            if status == ACK_OK:
                self.a.account(seg, nbytes, chunk_sum, skipped=False)
            elif status == ACK_RESEND:
                count = self.resends.get((file, index), 0) + 1
                self.resends[(file, index)] = count
                if count > self.a.opts.max_resends:
                    raise TransientTransferError(
                        f"chunk {index} of {self.a.sources[file].name!r} failed its checksum "
                        f"{count} times"
                    )
                self._process(seg, resend=True)
            else:
                raise ProtocolError(f"unknown ack status {status}")


def _raise_if_refused(result: dict[str, Any]) -> None:
    if result.get("ok") is True:
        return
    reason = str(result.get("error") or "refused without a reason")
    if result.get("retry") is True:
        raise TransferBusy(reason)
    raise TransferRefused(reason)
