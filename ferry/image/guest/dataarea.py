"""The guest's data area: identity, payload and boot counter on raw sectors.

The data area is the disk's second MBR partition (type 0xDA, "non-FS data"),
so the guest kernel exposes it as ``/dev/vda2`` and ``/init`` can use plain
``dd`` on it.  Layout, in 512-byte sectors from the partition start::

    sector 0      header, ASCII lines, NUL padded:
                    FERRY-GUEST-DATA 1
                    id=<guest id>
                    payload_offset=<bytes>
                    payload_len=<bytes>
                    payload_sha256=<hex>
    sector 1      boot counter, "counter=<n>\\n", NUL padded
    sector 8...   payload: deterministic pseudo-random bytes derived from the id

The format is shared with ``init.sh``: a new header field must be added in
both places, and the version in :data:`MAGIC` bumped when old guests could
misread the new layout.  The helpers at the bottom read a raw image from the
host side (tests use them to check or corrupt what a guest sees).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ferry.image.guest.errors import GuestImageError

MAGIC = "FERRY-GUEST-DATA 1"
SECTOR = 512
COUNTER_OFFSET = SECTOR
PAYLOAD_OFFSET = 8 * SECTOR
PAYLOAD_LEN = 256 * 1024
DATA_AREA_SIZE = 1024 * 1024
DATA_PARTITION_TYPE = 0xDA
DATA_PARTITION_INDEX = 1  # second MBR slot

# Guest ids travel unquoted through a shell script, a kernel-free header and
# the console marker; this keeps all three unambiguous.
GUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_guest_id(guest_id: str) -> None:
    if not GUEST_ID_RE.match(guest_id):
        raise GuestImageError(
            f"invalid guest id {guest_id!r}: use 1-128 characters from [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )


def payload_for(guest_id: str, length: int = PAYLOAD_LEN) -> bytes:
    """Deterministic bytes for ``guest_id``: SHA-256 in counter mode."""
    seed = b"ferry-guest-payload\0" + guest_id.encode()
    blocks = (length + 31) // 32
    stream = b"".join(
        hashlib.sha256(seed + index.to_bytes(8, "big")).digest() for index in range(blocks)
    )
    return stream[:length]


def build_data_area(guest_id: str, boot_counter: int = 0) -> bytes:
    """The whole data partition content for a fresh guest."""
    check_guest_id(guest_id)
    payload = payload_for(guest_id)
    header = (
        f"{MAGIC}\n"
        f"id={guest_id}\n"
        f"payload_offset={PAYLOAD_OFFSET}\n"
        f"payload_len={len(payload)}\n"
        f"payload_sha256={hashlib.sha256(payload).hexdigest()}\n"
    ).encode()
    area = bytearray(DATA_AREA_SIZE)
    area[0 : len(header)] = header
    area[COUNTER_OFFSET : COUNTER_OFFSET + SECTOR] = _counter_sector(boot_counter)
    area[PAYLOAD_OFFSET : PAYLOAD_OFFSET + len(payload)] = payload
    return bytes(area)


def _counter_sector(value: int) -> bytes:
    return f"counter={value}\n".encode().ljust(SECTOR, b"\0")


@dataclass(frozen=True)
class DataHeader:
    guest_id: str
    payload_offset: int
    payload_len: int
    payload_sha256: str


def locate_data_area(image: Path) -> int:
    """Byte offset of the data partition inside a raw image."""
    with image.open("rb") as handle:
        mbr = handle.read(SECTOR)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise GuestImageError(f"{image} has no MBR (is it raw, not qcow2?)")
    entry = 446 + 16 * DATA_PARTITION_INDEX
    ptype = mbr[entry + 4]
    start_lba = struct.unpack_from("<I", mbr, entry + 8)[0]
    if ptype != DATA_PARTITION_TYPE or start_lba == 0:
        raise GuestImageError(f"{image} has no ferry data partition")
    return start_lba * SECTOR


def read_header(image: Path) -> DataHeader:
    offset = locate_data_area(image)
    with image.open("rb") as handle:
        handle.seek(offset)
        raw = handle.read(SECTOR).rstrip(b"\0").decode(errors="replace")
    lines = raw.splitlines()
    if not lines or lines[0] != MAGIC:
        raise GuestImageError(f"{image}: data area header has no {MAGIC!r} magic")
    fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    return DataHeader(
        guest_id=fields["id"],
        payload_offset=int(fields["payload_offset"]),
        payload_len=int(fields["payload_len"]),
        payload_sha256=fields["payload_sha256"],
    )


def read_boot_counter(image: Path) -> int:
    """The boot counter as last written by the guest (0 before the first boot)."""
    offset = locate_data_area(image)
    with image.open("rb") as handle:
        handle.seek(offset + COUNTER_OFFSET)
        raw = handle.read(SECTOR).rstrip(b"\0").decode(errors="replace")
    match = re.match(r"counter=(\d+)", raw)
    if match is None:
        raise GuestImageError(f"{image}: boot counter sector is unreadable: {raw[:40]!r}")
    return int(match.group(1))


def payload_position(image: Path) -> int:
    """Absolute byte offset of the payload inside a raw image."""
    return locate_data_area(image) + read_header(image).payload_offset
