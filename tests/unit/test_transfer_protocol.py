from __future__ import annotations

import json
import socket
import struct

import pytest

from ferry.transfer import ProtocolError, TransferRefused, check_file_name
from ferry.transfer.protocol import (
    CHUNK,
    FRAME,
    KIND_CHUNK,
    KIND_HEADER,
    MAX_SEGMENT,
    PROTO,
    RUN,
    ChunkHeader,
    Hello,
    ManifestEntry,
    chunk_prefix,
    encode_hello,
    encode_journal,
    encode_json,
    parse_chunk_header,
    parse_hello,
    parse_journal,
    parse_runs,
)
from ferry.transfer.wire import Wire


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
        "disk.journal",
        "x" * 256,
        "\udcff",
        None,
        42,
    ],
)
def test_unsafe_names_are_refused(name: object) -> None:
    with pytest.raises(TransferRefused, match="file name"):
        check_file_name(name)


def _wire(data: bytes) -> tuple[Wire, socket.socket]:
    a, b = socket.socketpair()
    b.sendall(data)
    b.shutdown(socket.SHUT_WR)
    return Wire(a, 1.0), b


def test_frame_round_trip() -> None:
    wire, other = _wire(encode_json(KIND_HEADER, {"a": 1}))
    assert wire.read_json(KIND_HEADER) == {"a": 1}
    wire.close()
    other.close()


def test_oversized_and_unknown_frames_are_rejected_before_reading() -> None:
    # Only the 5-byte prefix is sent: the receiver must refuse on the declared
    # length alone, without waiting for (or allocating) the body.
    for prefix, reason in [
        (struct.pack(">cI", KIND_CHUNK, 2 * MAX_SEGMENT), "exceeds"),
        (struct.pack(">cI", KIND_HEADER, 2**31), "exceeds"),
        (struct.pack(">cI", b"Z", 1), "unknown frame kind"),
    ]:
        wire, other = _wire(prefix)
        with pytest.raises(ProtocolError, match=reason):
            wire.read_head()
        wire.close()
        other.close()


def test_chunk_header_round_trip() -> None:
    runs = ((0, 4096), (65536, 131072))
    head = ChunkHeader(3, 1, 77, (1 << 127) + 5, 135168, 1000, runs)
    prefix = chunk_prefix(head)
    kind, length = FRAME.unpack_from(prefix)
    assert kind == KIND_CHUNK
    assert length == CHUNK.size + RUN.size * len(runs) + 1000
    fixed = prefix[FRAME.size : FRAME.size + CHUNK.size]
    assert parse_chunk_header(fixed) == (3, 1, 77, (1 << 127) + 5, 135168, 1000, 2)
    assert parse_runs(prefix[FRAME.size + CHUNK.size :], 2) == runs
    with pytest.raises(ProtocolError, match="out of bounds"):
        parse_chunk_header(CHUNK.pack(0, 0, 0, bytes(16), MAX_SEGMENT + 1, 0, 0))


def test_journal_frames_split_and_round_trip() -> None:
    entries = [(i, 65536, i * 7 + (1 << 100)) for i in range(60_000)]
    frames = encode_journal(2, entries)
    assert len(frames) == 2
    got = []
    for frame in frames:
        file, part = parse_journal(frame[FRAME.size :])
        assert file == 2
        got.extend(part)
    assert got == entries


def _hello(**overrides: object) -> bytes:
    obj: dict[str, object] = {
        "proto": PROTO,
        "role": "control",
        "token": "t",
        "migration_uuid": "m",
        "files": [{"name": "disk", "size": 10, "allocated": 10}],
        "chunk_size": 4 * 1024 * 1024,
        "streams": 2,
        "compression": ["zstd"],
    }
    obj.update(overrides)
    return json.dumps(obj).encode()


def test_hello_validation() -> None:
    hello = parse_hello(_hello())
    assert (hello.token, hello.migration_uuid, hello.files[0].name) == ("t", "m", "disk")
    assert hello.streams == 2 and hello.compression == ("zstd",)
    data = parse_hello(
        json.dumps(
            {"proto": PROTO, "role": "data", "token": "t", "migration_uuid": "m", "session": "s"}
        ).encode()
    )
    assert (data.role, data.session) == ("data", "s")
    encoded = encode_hello(
        Hello("control", "t", "m", (ManifestEntry("disk", 10, 10),), 4 * 1024 * 1024, 2, ("zstd",))
    )
    assert parse_hello(encoded[FRAME.size :]) == hello
    bad = [
        (_hello(proto="ferry-transfer/1"), "unsupported protocol"),
        (_hello(role="boss"), "role"),
        (_hello(token=1), "token"),
        (_hello(files=[{"name": "d", "size": -1, "allocated": 0}]), "invalid size"),
        (_hello(files=[{"name": "d", "size": 1, "allocated": 2}]), "invalid size"),
        (_hello(files=[{"name": "d", "size": True, "allocated": 0}]), "size"),
        (_hello(files=[{"name": "d", "size": 1, "allocated": 0}] * 2), "twice"),
        (_hello(files=[{"name": "../d", "size": 1, "allocated": 0}]), "file name"),
        (_hello(files="disk"), "files"),
        (_hello(chunk_size=1000), "chunk_size"),
        (_hello(streams=0), "streams"),
        (_hello(compression="zstd"), "compression"),
        (b"[1, 2]", "JSON object"),
        (b"\xff{", "JSON"),
    ]
    for body, reason in bad:
        with pytest.raises(TransferRefused, match=reason):
            parse_hello(body)
