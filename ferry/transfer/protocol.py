"""Wire format of the ferry data plane ("ferry-transfer/1").

One TCP connection moves the files of one migration, sender -> receiver.
Everything is a frame::

    frame  = kind:1 byte | length:u32 big-endian | body:length bytes

Kinds (JSON bodies are UTF-8 objects, at most ``MAX_JSON`` bytes):

    H  sender->receiver  JSON {"proto": "ferry-transfer/1", "token": str,
                               "migration_uuid": str,
                               "files": [{"name": str, "size": int}, ...]}
    A  receiver->sender  JSON {"ok": true}: header accepted, start sending
    D  sender->receiver  offset:u64 | checksum:u64 | payload
                         (checksum = xxh3_64(payload, seed=offset), so a
                         payload cannot be replayed at another offset;
                         payload at most ``MAX_PAYLOAD`` bytes)
    E  sender->receiver  JSON {"name": str, "bytes": int, "digest": str}
    R  receiver->sender  JSON {"ok": bool, "files": {name: {"digest": str,
                               "bytes_written": int}}, "error": str | null}

Conversation::

    S: H            R: A  (or R with ok=false, then close: nothing written)
    for each file, in manifest order:
        S: D*       data frames, ascending non-overlapping offsets, only
                    ranges that are allocated and not all zero (holes are
                    implied; the receiver pre-sizes the file)
        S: E        bytes = payload bytes sent for the file, digest = sparse
                    digest (see ``digest.py``) of the file as read
    R: R            ok=true only after every file was verified, fsynced and
                    renamed into place

The file digest travels in the per-file trailer ``E`` rather than in the
header so the sender reads each file once (v1 choice); the receiver computes
the digest of what it received and only renames ``<name>.part`` into place if
both agree.  The receiver may send ``R`` with ok=false at any point and close.

Names are plain file names (see :func:`check_file_name`) and must match the
grant the conductor registered.  To extend the protocol, add a frame kind
(unknown kinds are rejected, so old receivers refuse cleanly) or a new
``proto`` string for incompatible changes.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from typing import Any

import xxhash

from .errors import ProtocolError, TransferRefused

PROTO = "ferry-transfer/1"

KIND_HEADER = b"H"
KIND_ACCEPT = b"A"
KIND_DATA = b"D"
KIND_END = b"E"
KIND_RESULT = b"R"

MAX_JSON = 1024 * 1024
MAX_PAYLOAD = 8 * 1024 * 1024
MAX_FILES = 1024
MAX_NAME_BYTES = 255
PART_SUFFIX = ".part"

_FRAME = struct.Struct(">cI")
_DATA = struct.Struct(">QQ")
_LIMITS = {
    KIND_HEADER: MAX_JSON,
    KIND_ACCEPT: MAX_JSON,
    KIND_END: MAX_JSON,
    KIND_RESULT: MAX_JSON,
    KIND_DATA: _DATA.size + MAX_PAYLOAD,
}


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    size: int


@dataclass(frozen=True)
class Header:
    token: str
    migration_uuid: str
    files: tuple[ManifestEntry, ...]


@dataclass(frozen=True)
class EndOfFile:
    name: str
    nbytes: int
    digest: str


def check_file_name(name: object) -> str:
    """Return ``name`` if it is a safe plain file name, else raise TransferRefused.

    Rejects path separators, ``..``, NUL and control characters, hidden names
    (leading ``.``), names ending in ``.part`` (reserved for partial files) and
    anything that is not valid UTF-8 or longer than 255 bytes.
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
    if name.endswith(PART_SUFFIX):
        raise TransferRefused(f"invalid file name {name!r}: {PART_SUFFIX} is reserved")
    if len(encoded) > MAX_NAME_BYTES:
        raise TransferRefused(f"invalid file name {name[:32]!r}...: too long")
    return name


# -- encoding ---------------------------------------------------------------


def encode_json(kind: bytes, obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    if len(body) > _LIMITS[kind]:
        raise ValueError(f"{kind!r} frame too large ({len(body)} bytes)")
    return _FRAME.pack(kind, len(body)) + body


def data_frame_prefix(offset: int, payload: bytes | memoryview) -> bytes:
    """Frame header + offset + checksum; write the payload right after it."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    checksum = xxhash.xxh3_64_intdigest(payload, seed=offset)
    return _FRAME.pack(KIND_DATA, _DATA.size + len(payload)) + _DATA.pack(offset, checksum)


def encode_header(header: Header) -> bytes:
    files = [{"name": f.name, "size": f.size} for f in header.files]
    return encode_json(
        KIND_HEADER,
        {
            "proto": PROTO,
            "token": header.token,
            "migration_uuid": header.migration_uuid,
            "files": files,
        },
    )


def encode_result(
    ok: bool, files: dict[str, dict[str, Any]] | None = None, error: str | None = None
) -> bytes:
    return encode_json(KIND_RESULT, {"ok": ok, "files": files or {}, "error": error})


# -- decoding ---------------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Read one frame; the length is checked against the kind's limit first,
    so a hostile peer cannot make us allocate more than one bounded frame."""
    head = await reader.readexactly(_FRAME.size)
    kind, length = _FRAME.unpack(head)
    limit = _LIMITS.get(kind)
    if limit is None:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if length > limit:
        raise ProtocolError(f"{kind!r} frame of {length} bytes exceeds limit {limit}")
    body = await reader.readexactly(length) if length else b""
    return kind, body


def decode_json(kind: bytes, body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{kind!r} frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{kind!r} frame is not a JSON object")
    return obj


def _field(obj: dict[str, Any], key: str, typ: type, what: str) -> Any:
    value = obj.get(key)
    # bool is an int subclass; a size of ``true`` is a protocol error.
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ProtocolError(f"{what}: field {key!r} must be {typ.__name__}")
    return value


def parse_header(body: bytes) -> Header:
    """Validate a header frame body; raises before anything touches the disk."""
    obj = decode_json(KIND_HEADER, body)
    if obj.get("proto") != PROTO:
        raise ProtocolError(f"unsupported protocol {obj.get('proto')!r}, expected {PROTO!r}")
    token = _field(obj, "token", str, "header")
    migration_uuid = _field(obj, "migration_uuid", str, "header")
    raw_files = _field(obj, "files", list, "header")
    if len(raw_files) > MAX_FILES:
        raise ProtocolError(f"too many files ({len(raw_files)} > {MAX_FILES})")
    files: list[ManifestEntry] = []
    seen: set[str] = set()
    for raw in raw_files:
        if not isinstance(raw, dict):
            raise ProtocolError("header: manifest entries must be objects")
        name = check_file_name(raw.get("name"))
        size = _field(raw, "size", int, f"manifest entry {name!r}")
        if size < 0 or size >= 2**63:
            raise ProtocolError(f"manifest entry {name!r}: invalid size {size}")
        if name in seen:
            raise ProtocolError(f"manifest lists {name!r} twice")
        seen.add(name)
        files.append(ManifestEntry(name, size))
    return Header(token, migration_uuid, tuple(files))


def parse_data(body: bytes) -> tuple[int, memoryview]:
    """Return ``(offset, payload)`` of a data frame, verifying its checksum."""
    if len(body) < _DATA.size:
        raise ProtocolError("data frame too short")
    offset, checksum = _DATA.unpack_from(body)
    payload = memoryview(body)[_DATA.size :]
    if xxhash.xxh3_64_intdigest(payload, seed=offset) != checksum:
        raise TransferRefused(f"checksum mismatch in data frame at offset {offset}")
    return offset, payload


def parse_end(body: bytes) -> EndOfFile:
    obj = decode_json(KIND_END, body)
    name = _field(obj, "name", str, "end frame")
    nbytes = _field(obj, "bytes", int, "end frame")
    digest = _field(obj, "digest", str, "end frame")
    return EndOfFile(name, nbytes, digest)
