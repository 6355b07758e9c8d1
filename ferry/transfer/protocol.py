"""Wire format of the ferry data plane ("ferry-transfer/2").

A transfer (one migration's files) runs over one *control* connection and
``streams - 1`` extra *data* connections, sender -> receiver.  Everything is
a frame::

    frame = kind:1 byte | length:u32 big-endian | body:length bytes

Kinds (JSON bodies are UTF-8 objects of at most ``MAX_JSON`` bytes):

    H  s->r JSON  hello.  control: {"proto", "role": "control", "token",
                  "migration_uuid", "files": [{"name", "size", "allocated"}],
                  "chunk_size", "streams", "compression": ["zstd"] | []}
                  data: {"proto", "role": "data", "token", "migration_uuid",
                  "session"}
    J  r->s bin   journal: u16 file index, then records of u64 segment,
                  u32 bytes, 16-byte sum: segments already verified on the
                  receiver (resume); any number of J frames precede A
    A  r->s JSON  {"ok": true, "session", "chunk_size", "compression": bool}
    C  s->r bin   chunk: CHUNK header, runs (u32 start, u32 length relative
                  to the segment), payload (the runs' bytes back to back,
                  zstd-compressed when flags & 1)
    K  r->s bin   ack: u16 file, u64 segment, u8 status (0 written and
                  journaled, 1 checksum mismatch: send it again)
    F  s->r JSON  finish (control only, after every chunk was acked):
                  {"files": {name: {"segments", "bytes", "digest"}}}
    R  r->s JSON  {"ok", "files": {name: {"digest", "bytes_written"}},
                  "error", "retry"}; sent on any connection to refuse

A file is cut into segments of ``chunk_size`` bytes (a multiple of the
64 KiB digest block).  A segment with any non-zero block travels as one
chunk carrying only its non-zero blocks and their sum (see :mod:`.digest`),
on whichever stream is free, so several files and the ranges of one large
file move in parallel.  The receiver checks the sum before writing a byte,
writes the runs at their offsets in ``<name>.part``, journals the segment
and acks.  A ``retry`` of true in ``R`` marks a transient refusal (e.g. the
receiver is busy finishing an older attempt).

To extend: add a frame kind (unknown kinds are refused, so old peers fail
cleanly) or a field to a JSON frame; incompatible changes need a new
``PROTO`` string.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError, TransferRefused

PROTO = "ferry-transfer/2"

KIND_HEADER = b"H"
KIND_JOURNAL = b"J"
KIND_ACCEPT = b"A"
KIND_CHUNK = b"C"
KIND_ACK = b"K"
KIND_FINISH = b"F"
KIND_RESULT = b"R"

ACK_OK = 0
ACK_RESEND = 1

FLAG_ZSTD = 1

MAX_JSON = 1024 * 1024
MAX_SEGMENT = 8 * 1024 * 1024
MAX_PAYLOAD = MAX_SEGMENT  # v1 name, kept for callers validating chunk sizes
MAX_FILES = 1024
MAX_STREAMS = 16
MAX_NAME_BYTES = 255
PART_SUFFIX = ".part"
JOURNAL_SUFFIX = ".journal"

FRAME = struct.Struct(">cI")
CHUNK = struct.Struct(">HBQ16sIIH")  # file, flags, segment, sum, raw len, payload len, runs
RUN = struct.Struct(">II")
ACK = struct.Struct(">HQB")
JOURNAL_ENTRY = struct.Struct(">QI16s")
_MAX_RUNS = MAX_SEGMENT // (64 * 1024)
_LIMITS = {
    KIND_HEADER: MAX_JSON,
    KIND_ACCEPT: MAX_JSON,
    KIND_FINISH: MAX_JSON,
    KIND_RESULT: MAX_JSON,
    KIND_JOURNAL: MAX_JSON,
    KIND_ACK: ACK.size,
    KIND_CHUNK: CHUNK.size + RUN.size * _MAX_RUNS + MAX_SEGMENT,
}


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    size: int
    allocated: int = 0  # bytes in data extents on the source (space check)


@dataclass(frozen=True)
class Hello:
    role: str  # "control" or "data"
    token: str
    migration_uuid: str
    files: tuple[ManifestEntry, ...] = ()
    chunk_size: int = 0
    streams: int = 1
    compression: tuple[str, ...] = ()
    session: str = ""


@dataclass(frozen=True)
class ChunkHeader:
    file: int
    flags: int
    segment: int
    sum: int
    raw_len: int
    payload_len: int
    runs: tuple[tuple[int, int], ...]  # (start, length) relative to the segment


def frame_limit(kind: bytes) -> int:
    limit = _LIMITS.get(kind)
    if limit is None:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    return limit


def check_file_name(name: object) -> str:
    """Return ``name`` if it is a safe plain file name, else raise TransferRefused.

    Rejects path separators, ``..``, NUL and control characters, hidden names
    (leading ``.``), names ending in ``.part`` or ``.journal`` (reserved for
    partial files and their journals) and anything that is not valid UTF-8
    or longer than 255 bytes.
    """
    if not isinstance(name, str) or not name:
        raise TransferRefused(f"invalid file name {name!r}: must be a non-empty string")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise TransferRefused(f"invalid file name {name!r}: not valid UTF-8") from None
    bad = (
        "/" in name
        or "\\" in name
        or ".." in name
        or name.startswith(".")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    )
    if bad:
        raise TransferRefused(f"invalid file name {name!r}: must be a plain file name")
    for suffix in (PART_SUFFIX, JOURNAL_SUFFIX):
        if name.endswith(suffix):
            raise TransferRefused(f"invalid file name {name!r}: {suffix} is reserved")
    if len(encoded) > MAX_NAME_BYTES:
        raise TransferRefused(f"invalid file name {name[:32]!r}...: too long")
    return name


def check_chunk_size(chunk_size: int) -> int:
    if chunk_size < 65536 or chunk_size > MAX_SEGMENT or chunk_size % 65536:
        raise ValueError(f"chunk_size must be a multiple of 64 KiB up to {MAX_SEGMENT}")
    return chunk_size


# -- encoding ---------------------------------------------------------------


def frame(kind: bytes, body: bytes) -> bytes:
    return FRAME.pack(kind, len(body)) + body


def encode_json(kind: bytes, obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    if len(body) > _LIMITS[kind]:
        raise ValueError(f"{kind!r} frame too large ({len(body)} bytes)")
    return frame(kind, body)


def encode_hello(hello: Hello) -> bytes:
    obj: dict[str, Any] = {
        "proto": PROTO,
        "role": hello.role,
        "token": hello.token,
        "migration_uuid": hello.migration_uuid,
    }
    if hello.role == "control":
        obj["files"] = [
            {"name": f.name, "size": f.size, "allocated": f.allocated} for f in hello.files
        ]
        obj["chunk_size"] = hello.chunk_size
        obj["streams"] = hello.streams
        obj["compression"] = list(hello.compression)
    else:
        obj["session"] = hello.session
    return encode_json(KIND_HEADER, obj)


def encode_result(
    ok: bool,
    files: dict[str, dict[str, Any]] | None = None,
    error: str | None = None,
    retry: bool = False,
) -> bytes:
    return encode_json(
        KIND_RESULT, {"ok": ok, "files": files or {}, "error": error, "retry": retry}
    )


def chunk_prefix(head: ChunkHeader) -> bytes:
    """Frame header, chunk header and runs; the payload follows on the wire."""
    body_len = CHUNK.size + RUN.size * len(head.runs) + head.payload_len
    parts = [
        FRAME.pack(KIND_CHUNK, body_len),
        CHUNK.pack(
            head.file,
            head.flags,
            head.segment,
            head.sum.to_bytes(16, "big"),
            head.raw_len,
            head.payload_len,
            len(head.runs),
        ),
    ]
    parts.extend(RUN.pack(start, length) for start, length in head.runs)
    return b"".join(parts)


def encode_ack(file: int, segment: int, status: int) -> bytes:
    return frame(KIND_ACK, ACK.pack(file, segment, status))


def encode_journal(file: int, entries: Sequence[tuple[int, int, int]]) -> list[bytes]:
    """J frames listing ``(segment, bytes, sum)`` of one file, each within MAX_JSON."""
    per_frame = (MAX_JSON - 2) // JOURNAL_ENTRY.size
    frames = []
    for i in range(0, len(entries), per_frame):
        body = struct.pack(">H", file) + b"".join(
            JOURNAL_ENTRY.pack(seg, n, s.to_bytes(16, "big"))
            for seg, n, s in entries[i : i + per_frame]
        )
        frames.append(frame(KIND_JOURNAL, body))
    return frames


# -- decoding ---------------------------------------------------------------


def decode_json(kind: bytes, body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{kind!r} frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{kind!r} frame is not a JSON object")
    return obj


def field(obj: dict[str, Any], key: str, typ: type, what: str) -> Any:
    value = obj.get(key)
    # bool is an int subclass; a size of ``true`` is a protocol error.
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ProtocolError(f"{what}: field {key!r} must be {typ.__name__}")
    return value


def parse_hello(body: bytes) -> Hello:
    """Validate a hello frame body; raises before anything touches the disk."""
    obj = decode_json(KIND_HEADER, body)
    if obj.get("proto") != PROTO:
        raise ProtocolError(f"unsupported protocol {obj.get('proto')!r}, expected {PROTO!r}")
    role = obj.get("role")
    token = field(obj, "token", str, "header")
    migration_uuid = field(obj, "migration_uuid", str, "header")
    if role == "data":
        return Hello("data", token, migration_uuid, session=field(obj, "session", str, "header"))
    if role != "control":
        raise ProtocolError(f"header: unknown role {role!r}")
    raw_files = field(obj, "files", list, "header")
    if len(raw_files) > MAX_FILES:
        raise ProtocolError(f"too many files ({len(raw_files)} > {MAX_FILES})")
    files: list[ManifestEntry] = []
    seen: set[str] = set()
    for raw in raw_files:
        if not isinstance(raw, dict):
            raise ProtocolError("header: manifest entries must be objects")
        name = check_file_name(raw.get("name"))
        size = field(raw, "size", int, f"manifest entry {name!r}")
        allocated = field(raw, "allocated", int, f"manifest entry {name!r}")
        if not 0 <= size < 2**63 or not 0 <= allocated <= size:
            raise ProtocolError(f"manifest entry {name!r}: invalid size {size}/{allocated}")
        if name in seen:
            raise ProtocolError(f"manifest lists {name!r} twice")
        seen.add(name)
        files.append(ManifestEntry(name, size, allocated))
    chunk_size = field(obj, "chunk_size", int, "header")
    try:
        check_chunk_size(chunk_size)
    except ValueError as exc:
        raise ProtocolError(f"header: {exc}") from None
    streams = field(obj, "streams", int, "header")
    if not 1 <= streams <= MAX_STREAMS:
        raise ProtocolError(f"header: streams must be 1..{MAX_STREAMS}")
    compression = obj.get("compression", [])
    if not isinstance(compression, list) or not all(isinstance(c, str) for c in compression):
        raise ProtocolError("header: compression must be a list of names")
    return Hello(
        "control", token, migration_uuid, tuple(files), chunk_size, streams, tuple(compression)
    )


def parse_chunk_header(fixed: bytes) -> tuple[int, int, int, int, int, int, int]:
    """Unpack the fixed part of a chunk: (file, flags, segment, sum, raw, payload, runs)."""
    file, flags, segment, raw_sum, raw_len, payload_len, nruns = CHUNK.unpack(fixed)
    if nruns > _MAX_RUNS or raw_len > MAX_SEGMENT or payload_len > MAX_SEGMENT:
        raise ProtocolError("chunk header out of bounds")
    return file, flags, segment, int.from_bytes(raw_sum, "big"), raw_len, payload_len, nruns


def parse_runs(data: bytes, nruns: int) -> tuple[tuple[int, int], ...]:
    return tuple(RUN.unpack_from(data, i * RUN.size) for i in range(nruns))


def parse_ack(body: bytes) -> tuple[int, int, int]:
    if len(body) != ACK.size:
        raise ProtocolError("ack frame has the wrong size")
    file, segment, status = ACK.unpack(body)
    return file, segment, status


def parse_journal(body: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    if len(body) < 2 or (len(body) - 2) % JOURNAL_ENTRY.size:
        raise ProtocolError("journal frame has the wrong size")
    (file,) = struct.unpack_from(">H", body)
    entries = []
    for pos in range(2, len(body), JOURNAL_ENTRY.size):
        seg, n, s = JOURNAL_ENTRY.unpack_from(body, pos)
        entries.append((seg, n, int.from_bytes(s, "big")))
    return file, entries
