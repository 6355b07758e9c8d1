from __future__ import annotations

import asyncio
import json
import struct

import pytest

from ferry.transfer import ProtocolError, TransferRefused, check_file_name
from ferry.transfer.protocol import (
    KIND_DATA,
    KIND_HEADER,
    MAX_PAYLOAD,
    PROTO,
    data_frame_prefix,
    encode_json,
    parse_data,
    parse_header,
    read_frame,
)


@pytest.mark.parametrize("name", ["disk", "disk.config", "console.log", "x-1_2", "dïsk"])
def test_plain_names_are_accepted(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "..",
        ".",
        "/etc/passwd",
        "a/b",
        "a\\b",
        ".hidden",
        "a..b",
        "nul\0byte",
        "new\nline",
        "disk.part",
        "x" * 256,
        "\udcff",
        None,
        42,
    ],
)
def test_unsafe_names_are_refused(name: object) -> None:
    with pytest.raises(TransferRefused, match="file name"):
        check_file_name(name)


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_frame_round_trip() -> None:
    frame = encode_json(KIND_HEADER, {"a": 1})
    kind, body = await read_frame(_reader(frame))
    assert kind == KIND_HEADER
    assert json.loads(body) == {"a": 1}


async def test_oversized_and_unknown_frames_are_rejected_before_reading() -> None:
    # Only the 5-byte prefix is fed: the receiver must refuse on the declared
    # length alone, without waiting for (or allocating) the body.
    with pytest.raises(ProtocolError, match="exceeds limit"):
        await read_frame(_reader(struct.pack(">cI", KIND_DATA, MAX_PAYLOAD + 17)))
    with pytest.raises(ProtocolError, match="exceeds limit"):
        await read_frame(_reader(struct.pack(">cI", KIND_HEADER, 2**31)))
    with pytest.raises(ProtocolError, match="unknown frame kind"):
        await read_frame(_reader(struct.pack(">cI", b"Z", 1) + b"x"))


def test_data_frame_checksum_binds_payload_and_offset() -> None:
    payload = b"hello world"
    frame = data_frame_prefix(4096, payload) + payload
    body = frame[5:]
    offset, view = parse_data(body)
    assert (offset, bytes(view)) == (4096, payload)
    corrupted = bytearray(body)
    corrupted[-1] ^= 1
    with pytest.raises(TransferRefused, match="checksum mismatch"):
        parse_data(bytes(corrupted))
    moved = struct.pack(">Q", 8192) + body[8:]  # same payload, replayed elsewhere
    with pytest.raises(TransferRefused, match="checksum mismatch"):
        parse_data(moved)
    with pytest.raises(ValueError):
        data_frame_prefix(0, bytes(MAX_PAYLOAD + 1))


def _header(**overrides: object) -> bytes:
    obj: dict[str, object] = {
        "proto": PROTO,
        "token": "t",
        "migration_uuid": "m",
        "files": [{"name": "disk", "size": 10}],
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_header_validation() -> None:
    header = parse_header(_header())
    assert (header.token, header.migration_uuid, header.files[0].name) == ("t", "m", "disk")
    bad = [
        (_header(proto="ferry-transfer/0"), "unsupported protocol"),
        (_header(token=1), "token"),
        (_header(files=[{"name": "d", "size": -1}]), "invalid size"),
        (_header(files=[{"name": "d", "size": True}]), "size"),
        (_header(files=[{"name": "d", "size": 1}, {"name": "d", "size": 1}]), "twice"),
        (_header(files=[{"name": "../d", "size": 1}]), "file name"),
        (_header(files="disk"), "files"),
        (b"[1, 2]", "JSON object"),
        (b"\xff{", "JSON"),
    ]
    for body, reason in bad:
        with pytest.raises(TransferRefused, match=reason):
            parse_header(body)
