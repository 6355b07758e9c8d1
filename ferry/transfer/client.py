"""Sending side: stream a migration's files to a destination transfer endpoint.

:func:`send_files` opens one connection, sends the header (token, migration,
manifest of names and logical sizes), waits for the receiver to accept, then
streams every file in order and waits for the receiver's verdict.

Per file it reads only allocated extents (``SEEK_DATA``/``SEEK_HOLE``), skips
64 KiB blocks that are entirely zero (so holes *and* written zeros stay holes
on the destination), and computes the layout-independent sparse digest while
reading, which it sends in the per-file trailer: each file is read exactly
once.  Because that digest is computed from the bytes actually sent, it
cannot notice a source file modified during the transfer; the sender guards
against that by refusing to finish a file whose size or mtime changed (the
VM is expected to be stopped during a cold migration anyway).

To change what is sent (e.g. a qcow2-aware allocation map), swap
:func:`ferry.transfer.extents.data_extents` for another extent source; the
receiver does not care how ranges were chosen as long as they ascend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._aio import run_blocking
from .digest import SparseDigest
from .errors import TransferError, TransferRefused
from .extents import data_extents, nonzero_runs
from .protocol import (
    KIND_ACCEPT,
    KIND_END,
    KIND_RESULT,
    MAX_PAYLOAD,
    Header,
    ManifestEntry,
    check_file_name,
    data_frame_prefix,
    decode_json,
    encode_header,
    encode_json,
    read_frame,
)

DEFAULT_CHUNK = 4 * 1024 * 1024
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FileResult:
    size: int  # logical size
    allocated_bytes: int  # bytes in data extents on the source (what was read)
    digest: str  # sparse digest, verified by the receiver


@dataclass(frozen=True)
class TransferResult:
    bytes_sent: int  # payload bytes on the wire (excludes framing and zero blocks)
    files: dict[str, FileResult]
    seconds: float


@dataclass
class _Source:
    name: str
    fd: int
    size: int
    mtime_ns: int
    extents: list[tuple[int, int]] = field(default_factory=list)

    @property
    def allocated(self) -> int:
        return sum(length for _, length in self.extents)


async def send_files(
    address: tuple[str, int],
    token: str,
    migration_uuid: str,
    directory: Path,
    names: list[str],
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    *,
    connect_timeout: float = 30.0,
    idle_timeout: float = 600.0,
) -> TransferResult:
    """Send ``directory/<name>`` for each name; raise TransferError on failure.

    ``progress(bytes_done, bytes_total)`` is called after every chunk, where
    the total is the allocated size of all files.  ``idle_timeout`` bounds any
    wait for the receiver; it is generous because the receiver fsyncs each
    file before reading on.  Raises :class:`TransferRefused` with the
    receiver's reason when the receiver refuses.
    """
    if not 0 < chunk_size <= MAX_PAYLOAD:
        raise ValueError(f"chunk_size must be in 1..{MAX_PAYLOAD}")
    for name in names:
        check_file_name(name)
    if len(set(names)) != len(names):
        raise ValueError("duplicate file names")
    started = time.monotonic()
    sources: list[_Source] = []
    try:
        for name in names:
            sources.append(await run_blocking(_open_source, directory, name))
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(*address)
        try:
            session = _Session(reader, writer, idle_timeout, progress, chunk_size)
            sent, digests = await session.run(token, migration_uuid, sources)
        except BaseException:
            # Abort rather than close: the receiver must see the stream end
            # before any trailer, so it discards the partial files.
            writer.transport.abort()
            raise
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    except (ConnectionError, OSError) as exc:
        raise TransferError(f"transfer to {address[0]}:{address[1]} failed: {exc}") from exc
    except TimeoutError as exc:
        raise TransferError(f"transfer to {address[0]}:{address[1]} timed out") from exc
    except asyncio.IncompleteReadError as exc:
        raise TransferError(
            f"receiver {address[0]}:{address[1]} closed the connection without a verdict"
        ) from exc
    finally:
        for src in sources:
            os.close(src.fd)
    files = {s.name: FileResult(s.size, s.allocated, digests[s.name]) for s in sources}
    return TransferResult(sent, files, time.monotonic() - started)


def _open_source(directory: Path, name: str) -> _Source:
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TransferError(f"cannot open source file {name!r}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TransferError(f"{name!r} is not a regular file")
        src = _Source(name, fd, st.st_size, st.st_mtime_ns)
        src.extents = list(data_extents(fd, st.st_size))
        return src
    except BaseException:
        os.close(fd)
        raise


def _chunks(extents: list[tuple[int, int]], chunk_size: int) -> Iterator[tuple[int, int]]:
    for start, length in extents:
        for offset in range(start, start + length, chunk_size):
            yield offset, min(chunk_size, start + length - offset)


def _read_chunk(
    fd: int, offset: int, length: int, digest: SparseDigest
) -> tuple[int, list[tuple[bytes, memoryview]]]:
    """Read one chunk, digest it and return ``(frame prefix, payload)`` pairs.

    Runs in a worker thread: reading, zero detection, digest and checksums
    are all O(chunk) and would otherwise stall the event loop.
    """
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise TransferError(f"short read at offset {offset}: source file changed?")
    frames = []
    for run_offset, run in nonzero_runs(offset, data):
        digest.update(run_offset, run)
        frames.append((data_frame_prefix(run_offset, run), run))
    return length, frames


class _Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout: float,
        progress: Progress | None,
        chunk_size: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_timeout = idle_timeout
        self.progress = progress
        self.chunk_size = chunk_size
        self.verdict: asyncio.Task[tuple[bytes, bytes]] | None = None

    async def run(
        self, token: str, migration_uuid: str, sources: list[_Source]
    ) -> tuple[int, dict[str, str]]:
        manifest = tuple(ManifestEntry(s.name, s.size) for s in sources)
        self.writer.write(encode_header(Header(token, migration_uuid, manifest)))
        await self._drain()
        kind, body = await self._wait(read_frame(self.reader))
        if kind == KIND_RESULT:
            self._raise_refusal(body)
        if kind != KIND_ACCEPT:
            raise TransferError(f"receiver answered the header with a {kind!r} frame")
        # From now on the receiver only speaks to refuse or to conclude; keep
        # a read pending so a refusal stops us at once.
        self.verdict = asyncio.create_task(read_frame(self.reader))
        try:
            return await self._send_all(sources)
        finally:
            if not self.verdict.done():
                self.verdict.cancel()
            elif not self.verdict.cancelled():
                self.verdict.exception()  # mark retrieved: no "never retrieved" noise

    async def _send_all(self, sources: list[_Source]) -> tuple[int, dict[str, str]]:
        total = sum(s.allocated for s in sources)
        done = sent = 0
        digests: dict[str, str] = {}
        sent_per_file: dict[str, int] = {}
        for src in sources:
            digest = SparseDigest(src.size)
            file_sent = 0
            chunks = _chunks(src.extents, self.chunk_size)
            # Pipelined: the next chunk is read (and digested) by a worker
            # thread while the current one drains to the socket.  Reads stay
            # strictly in order because each starts after the previous ended.
            reading = self._read_next(src.fd, chunks, digest)
            try:
                while reading is not None:
                    n, frames = await reading
                    reading = self._read_next(src.fd, chunks, digest)
                    for prefix, payload in frames:
                        self.writer.write(prefix)
                        self.writer.write(payload)
                        file_sent += len(payload)
                    await self._drain()
                    done += n
                    if self.progress is not None:
                        self.progress(done, total)
            finally:
                if reading is not None:
                    # Let the worker finish before the caller closes the fd.
                    await asyncio.wait([reading])
                    if not reading.cancelled():
                        reading.exception()
            st = await run_blocking(os.fstat, src.fd)
            if st.st_size != src.size or st.st_mtime_ns != src.mtime_ns:
                raise TransferError(f"{src.name!r} changed while it was being sent")
            digests[src.name] = digest.hexdigest()
            sent_per_file[src.name] = file_sent
            sent += file_sent
            end_frame = {"name": src.name, "bytes": file_sent, "digest": digests[src.name]}
            self.writer.write(encode_json(KIND_END, end_frame))
            await self._drain()
        assert self.verdict is not None
        kind, body = await self._wait(self.verdict)
        if kind != KIND_RESULT:
            raise TransferError(f"receiver concluded with a {kind!r} frame")
        self._check_result(decode_json(kind, body), digests, sent_per_file)
        return sent, digests

    def _read_next(
        self, fd: int, chunks: Iterator[tuple[int, int]], digest: SparseDigest
    ) -> asyncio.Future[tuple[int, list[tuple[bytes, memoryview]]]] | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        offset, n = chunk
        return asyncio.ensure_future(run_blocking(_read_chunk, fd, offset, n, digest))

    async def _drain(self) -> None:
        # A refusal can arrive while we are still sending: surface it instead
        # of the broken pipe it would eventually cause.
        if self.verdict is not None and self.verdict.done():
            await self._refused_early()
        try:
            await self._wait(self.writer.drain())
        except (ConnectionError, OSError):
            await self._refused_early()
            raise

    async def _refused_early(self) -> None:
        assert self.verdict is not None
        with contextlib.suppress(TimeoutError, ConnectionError, OSError, EOFError):
            async with asyncio.timeout(1.0):
                kind, body = await asyncio.shield(self.verdict)
            if kind == KIND_RESULT:
                self._raise_refusal(body)
        raise TransferError("receiver closed the connection")

    async def _wait(self, awaitable: Any) -> Any:
        async with asyncio.timeout(self.idle_timeout):
            return await awaitable

    def _raise_refusal(self, body: bytes) -> None:
        result = decode_json(KIND_RESULT, body)
        if result.get("ok") is True:
            raise TransferError("receiver reported success before the transfer ended")
        raise TransferRefused(str(result.get("error") or "refused without a reason"))

    def _check_result(
        self, result: dict[str, Any], digests: dict[str, str], sent: dict[str, int]
    ) -> None:
        if result.get("ok") is not True:
            raise TransferRefused(str(result.get("error") or "refused without a reason"))
        files = result.get("files")
        if not isinstance(files, dict) or set(files) != set(digests):
            raise TransferError("receiver's result does not list the files sent")
        for name, info in files.items():
            if not isinstance(info, dict):
                raise TransferError(f"receiver's result for {name!r} is malformed")
            if info.get("digest") != digests[name] or info.get("bytes_written") != sent[name]:
                raise TransferError(f"receiver's result for {name!r} does not match what was sent")
