"""Shared helpers for the transfer tests (no tests here).

``RawPeer`` is a deliberately dumb sender speaking the wire format by hand,
so tests can send what the real client never would: bad names, corrupted
payloads, wrong digests, truncated streams.  ``Relay`` is a TCP relay that
counts bytes and can cut connections, to simulate a network that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ferry.transfer import TokenRegistry, TransferGrant, new_token
from ferry.transfer.digest import scan_blocks
from ferry.transfer.protocol import (
    FRAME,
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
    frame_limit,
    parse_ack,
)

MiB = 1024 * 1024
CHUNK = 4 * MiB


def make_sparse(path: Path, size: int, writes: Sequence[tuple[int, bytes]] = ()) -> Path:
    """Create a sparse file of ``size`` bytes with ``data`` written at offsets."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
    return path


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def grant(
    registry: TokenRegistry,
    directory: Path,
    files: dict[str, int],
    migration_uuid: str = "mig-1",
    ttl: float = 60.0,
    **extra: Any,
) -> str:
    token = new_token()
    registry.expect(
        TransferGrant(token, migration_uuid, directory, dict(files), time.time() + ttl, **extra)
    )
    return token


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), to prove nothing else appeared."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def chunk_sum(segment_offset: int, seg_len: int, rel: int, data: bytes) -> int:
    """The sum of a segment of ``seg_len`` bytes holding only ``data`` at ``rel``."""
    content = bytearray(seg_len)
    content[rel : rel + len(data)] = data
    return scan_blocks(content, segment_offset, 0, seg_len)[1]


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.journal: list[tuple[int, bytes]] = []

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> RawPeer:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    async def header(
        self,
        token: str,
        migration_uuid: str,
        files: list[dict[str, Any]],
        chunk_size: int = CHUNK,
    ) -> tuple[bytes, dict[str, Any]]:
        """Send a control hello; return the first non-journal frame (A or R)."""
        entries = tuple(ManifestEntry(f["name"], f["size"], f.get("allocated", 0)) for f in files)
        hello = Hello("control", token, migration_uuid, entries, chunk_size, 1, ())
        self.writer.write(encode_hello(hello))
        await self.writer.drain()
        while True:
            kind, body = await self.raw_frame()
            if kind != KIND_JOURNAL:
                return kind, decode_json(kind, body)
            self.journal.append((kind[0], body))

    async def header_json(self, obj: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        self.writer.write(encode_json(b"H", obj))
        await self.writer.drain()
        kind, body = await self.raw_frame()
        return kind, decode_json(kind, body)

    async def raw_frame(self) -> tuple[bytes, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(FRAME.size), 5)
        kind, length = FRAME.unpack(head)
        assert length <= frame_limit(kind)
        body = await asyncio.wait_for(self.reader.readexactly(length), 5) if length else b""
        return kind, body

    async def chunk(
        self,
        segment: int,
        data: bytes,
        *,
        file: int = 0,
        chunk_size: int = CHUNK,
        seg_len: int | None = None,
        rel: int = 0,
        corrupt: bool = False,
    ) -> None:
        """Send ``data`` at ``rel`` inside ``segment`` as one run (``seg_len``:
        the segment's length, shorter than ``chunk_size`` at the end of a file)."""
        length = chunk_size if seg_len is None else seg_len
        s = chunk_sum(segment * chunk_size, length, rel, data) if rel + len(data) <= length else 0
        payload = bytearray(data)
        if corrupt:
            payload[len(payload) // 2] ^= 0x01
        runs = ((rel, len(data)),) if data else ()
        head = ChunkHeader(file, 0, segment, s, len(data), len(data), runs)
        self.writer.write(chunk_prefix(head) + bytes(payload))
        await self.writer.drain()

    async def ack(self) -> tuple[int, int, int] | dict[str, Any]:
        kind, body = await self.raw_frame()
        if kind == KIND_RESULT:
            return decode_json(kind, body)
        assert kind == KIND_ACK
        return parse_ack(body)

    async def finish(self, files: dict[str, dict[str, Any]]) -> None:
        self.writer.write(encode_json(KIND_FINISH, {"files": files}))
        await self.writer.drain()

    async def verdict(self) -> dict[str, Any]:
        while True:
            kind, body = await self.raw_frame()
            if kind == KIND_RESULT:
                return decode_json(kind, body)
            assert kind in (KIND_ACK, KIND_ACCEPT)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class Relay:
    """A TCP relay on 127.0.0.1 that counts bytes and can cut connections.

    ``cut_after`` (bytes from client to server, over all connections) makes
    the relay reset every connection once that many bytes went through,
    once; later connections pass untouched.  ``mangle`` may rewrite the
    client->server bytes (with their absolute position) to simulate a
    corrupting link.
    """

    def __init__(
        self,
        target: tuple[str, int],
        cut_after: int | None = None,
        mangle: Callable[[int, bytes], bytes] | None = None,
    ) -> None:
        self.target = target
        self.cut_after = cut_after
        self.mangle = mangle
        self.up = 0  # client -> server bytes
        self.down = 0
        self.cuts = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return ("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()

    def cut_all(self) -> None:
        self.cuts += 1
        for w in list(self._writers):
            w.transport.abort()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        self._writers.update((cw, sw))

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await r.read(256 * 1024):
                    if up:
                        if self.mangle is not None:
                            data = self.mangle(self.up, data)
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    w.write(data)
                    await w.drain()
                    if up and self.cut_after is not None and self.up >= self.cut_after:
                        self.cut_after = None
                        self.cut_all()
                        return
                if w.can_write_eof():
                    w.write_eof()
            except (ConnectionError, OSError):
                pass

        try:
            await asyncio.gather(pump(cr, sw, True), pump(sr, cw, False))
        finally:
            for w in (cw, sw):
                self._writers.discard(w)
                w.transport.abort()
