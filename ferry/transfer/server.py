"""Transfer endpoint: receives a migration's files on the destination host.

Each compute host runs one :class:`TransferServer` on its data-plane address.
A connection is one transfer (see :mod:`ferry.transfer.protocol`):

1. read and validate the header (names, sizes) - nothing touches the disk
   before the header is valid *and* the token is consumed from the
   :class:`~ferry.transfer.tokens.TokenRegistry` *and* the manifest matches
   the grant exactly;
2. reply ``A`` and receive each file into ``<name>.part`` (see
   :mod:`ferry.transfer.sink`), one bounded frame at a time;
3. when every file is verified and fsynced, rename them all into place,
   fsync the directory and reply ``R`` ok.

Any failure removes every ``.part`` (and any file already renamed by this
connection), replies ``R`` with the reason when the peer is still there, and
closes.  A grant is therefore all-or-nothing.

To add per-transfer policy (quotas, rate limits, metrics), hook into
:meth:`TransferServer._receive`; to change where files land, change how the
grant is built, not this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from ._aio import run_blocking
from .errors import ProtocolError, TransferRefused
from .protocol import (
    KIND_ACCEPT,
    KIND_DATA,
    KIND_END,
    KIND_HEADER,
    Header,
    encode_json,
    encode_result,
    parse_data,
    parse_end,
    parse_header,
    read_frame,
)
from .sink import PartFile, fsync_directory
from .tokens import TokenRegistry, TransferGrant

log = logging.getLogger(__name__)

# How long we keep reading (and discarding) after refusing, so the peer gets
# to read our error frame instead of a connection reset.
_LINGER_SECONDS = 5.0
_STREAM_LIMIT = 1024 * 1024


class _ClosedBeforeHeader(Exception):
    pass


class TransferServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: TokenRegistry,
        *,
        idle_timeout: float = 120.0,
        header_timeout: float = 10.0,
        file_mode: int = 0o600,
    ) -> None:
        self.host = host
        self.registry = registry
        # A silent peer must not pin partial files (and a grant) forever.
        self.idle_timeout = idle_timeout
        # Unauthenticated connections get much less patience than transfers.
        self.header_timeout = header_timeout
        self.file_mode = file_mode
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        # Final paths being received right now: two connections writing the
        # same target would delete each other's partial files.
        self._active: set[Path] = set()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("transfer server already started")
        self._server = await asyncio.start_server(
            self._handle, self.host, self._requested_port, limit=_STREAM_LIMIT
        )
        log.info("transfer endpoint listening on %s:%d", self.host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("transfer server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and abort transfers in progress (their partials are removed)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels connection tasks, and _serve has already
            # removed the partial files.  Returning normally keeps asyncio
            # (3.11) from logging the cancellation as an unhandled error.
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        parts: list[PartFile] = []
        claimed: list[Path] = []
        committed: list[Path] = []
        started = time.monotonic()
        error: str | None = None
        ok = False
        try:
            result = await self._receive(reader, writer, parts, claimed, committed)
            # The reply is part of the transaction: if the sender cannot learn
            # that it succeeded, roll back so it can simply retry.
            await self._reply(writer, encode_result(True, result))
            ok = True
        except _ClosedBeforeHeader:
            # Reachability probes (connect, close) are normal: not a warning.
            log.debug("connection from %s closed before sending a header", peer)
        except TransferRefused as exc:
            error = exc.reason
        except asyncio.IncompleteReadError:
            error = "connection closed mid-transfer"
        except TimeoutError:
            error = "timed out waiting for the sender"
        except ConnectionError as exc:
            error = f"connection lost: {exc}"
        except OSError as exc:
            log.exception("transfer from %s failed on local I/O", peer)
            error = f"receiver I/O error: {exc}"
        except Exception as exc:
            log.exception("transfer from %s failed", peer)
            error = f"receiver internal error: {type(exc).__name__}"
        finally:
            # Also runs on cancellation (server stop): never leave partials.
            await self._cleanup(parts, committed, failed=not ok)
            for path in claimed:
                self._active.discard(path)
            if task is not None:
                self._connections.discard(task)
            if not ok and error is None:
                writer.close()
        if ok:
            log.info(
                "received %d file(s), %d bytes from %s in %.2fs",
                len(parts),
                sum(p.bytes_written for p in parts),
                peer,
                time.monotonic() - started,
            )
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        elif error is not None:
            log.warning("refused transfer from %s: %s", peer, error)
            await self._refuse(reader, writer, error)

    async def _receive(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parts: list[PartFile],
        claimed: list[Path],
        committed: list[Path],
    ) -> dict[str, dict[str, Any]]:
        try:
            async with asyncio.timeout(self.header_timeout):
                kind, body = await read_frame(reader)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _ClosedBeforeHeader from None
            raise
        if kind != KIND_HEADER:
            raise ProtocolError(f"expected a header frame, got {kind!r}")
        header = parse_header(body)
        grant = self.registry.consume(header.token, header.migration_uuid)
        _check_manifest(header, grant)
        for entry in header.files:
            path = grant.directory / entry.name
            if path in self._active:
                raise TransferRefused(f"{entry.name!r} is already being received")
            self._active.add(path)
            claimed.append(path)
        await run_blocking(_prepare_directory, grant)
        await self._reply(writer, encode_json(KIND_ACCEPT, {"ok": True}))

        for entry in header.files:
            part = PartFile(grant.directory, entry.name, entry.size, self.file_mode)
            parts.append(part)
            await run_blocking(part.open)
            await self._receive_file(reader, part)

        await run_blocking(_commit, parts, committed, grant.directory)
        return {p.name: {"digest": p.digest, "bytes_written": p.bytes_written} for p in parts}

    async def _receive_file(self, reader: asyncio.StreamReader, part: PartFile) -> None:
        # Pipelined: frame N is written by a worker thread while frame N+1 is
        # read from the socket, so disk and network overlap.  At most two
        # frames are held in memory, and writes stay in order (the digest and
        # the ascending-offset check depend on it).
        pending: asyncio.Future[None] | None = None
        try:
            while True:
                kind, body = await self._read(reader)
                if pending is not None:
                    await pending  # surfaces a failed write of the previous frame
                    pending = None
                if kind == KIND_DATA:
                    # Checksum and bounds on the loop (xxh3 runs at >10 GB/s,
                    # so ~0.3 ms per 4 MiB) so a bad frame is refused at once;
                    # only the disk write and digest go to the thread.
                    offset, payload = parse_data(body)
                    part.accept(offset, len(payload))
                    pending = asyncio.ensure_future(run_blocking(part.write, offset, payload))
                elif kind == KIND_END:
                    await run_blocking(part.finish, parse_end(body))
                    return
                else:
                    raise ProtocolError(f"unexpected {kind!r} frame while receiving a file")
        finally:
            if pending is not None:
                # Never let cleanup unlink/close the file under a running write.
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()  # retrieved: the first error already propagates

    async def _read(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        async with asyncio.timeout(self.idle_timeout):
            return await read_frame(reader)

    async def _reply(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        writer.write(frame)
        async with asyncio.timeout(self.idle_timeout):
            await writer.drain()

    async def _cleanup(self, parts: list[PartFile], committed: list[Path], failed: bool) -> None:
        def work() -> None:
            for part in parts:
                part.discard()
            if failed:
                for path in committed:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)

        # run_blocking waits for the worker even if we are being cancelled.
        await run_blocking(work)

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: str
    ) -> None:
        """Send the error frame, then read and discard until the peer closes.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy our error frame before the sender reads it.
        """
        try:
            async with asyncio.timeout(_LINGER_SECONDS):
                writer.write(encode_result(False, error=reason))
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                while await reader.read(_STREAM_LIMIT):
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _check_manifest(header: Header, grant: TransferGrant) -> None:
    # Exact match: a missing disk must fail loudly here, not at boot time.
    offered = {f.name: f.size for f in header.files}
    unexpected = sorted(set(offered) - set(grant.files))
    if unexpected:
        raise TransferRefused(f"files not in the grant: {unexpected}")
    missing = sorted(set(grant.files) - set(offered))
    if missing:
        raise TransferRefused(f"granted files missing from the manifest: {missing}")
    for name, size in offered.items():
        if grant.files[name] != size:
            raise TransferRefused(
                f"{name!r}: size {size} does not match the granted size {grant.files[name]}"
            )


def _prepare_directory(grant: TransferGrant) -> None:
    grant.directory.mkdir(parents=True, exist_ok=True)
    if grant.replace_existing:
        return
    existing = sorted(n for n in grant.files if os.path.lexists(grant.directory / n))
    if existing:
        raise TransferRefused(f"destination files already exist: {existing}")


def _commit(parts: list[PartFile], committed: list[Path], directory: Path) -> None:
    for part in parts:
        part.commit()
        committed.append(part.final_path)
    fsync_directory(directory)
