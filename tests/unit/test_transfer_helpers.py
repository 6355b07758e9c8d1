"""Shared helpers for the transfer tests (no tests here).

``RawPeer`` is a deliberately dumb sender speaking the wire format by hand,
so tests can send what the real client never would: bad names, corrupted
payloads, wrong digests, truncated streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ferry.transfer import TokenRegistry, TransferGrant, new_token
from ferry.transfer.protocol import (
    KIND_END,
    KIND_HEADER,
    KIND_RESULT,
    PROTO,
    data_frame_prefix,
    decode_json,
    encode_json,
    read_frame,
)

MiB = 1024 * 1024


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
) -> str:
    token = new_token()
    registry.expect(TransferGrant(token, migration_uuid, directory, dict(files), time.time() + ttl))
    return token


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), to prove nothing else appeared."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> RawPeer:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    async def header(
        self, token: str, migration_uuid: str, files: list[dict[str, Any]]
    ) -> tuple[bytes, dict[str, Any]]:
        body = {"proto": PROTO, "token": token, "migration_uuid": migration_uuid, "files": files}
        self.writer.write(encode_json(KIND_HEADER, body))
        await self.writer.drain()
        return await self.frame()

    async def frame(self) -> tuple[bytes, dict[str, Any]]:
        kind, body = await asyncio.wait_for(read_frame(self.reader), 5)
        return kind, decode_json(kind, body)

    async def data(self, offset: int, payload: bytes, corrupt: bool = False) -> None:
        prefix = data_frame_prefix(offset, payload)
        if corrupt:
            flipped = bytearray(payload)
            flipped[len(flipped) // 2] ^= 0x01
            payload = bytes(flipped)
        self.writer.write(prefix + payload)
        await self.writer.drain()

    async def end(self, name: str, nbytes: int, digest: str) -> None:
        self.writer.write(encode_json(KIND_END, {"name": name, "bytes": nbytes, "digest": digest}))
        await self.writer.drain()

    async def verdict(self) -> dict[str, Any]:
        kind, result = await self.frame()
        assert kind == KIND_RESULT
        return result

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
