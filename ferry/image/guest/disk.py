"""Assembling the raw guest disk: MBR, bootable FAT partition, data partition.

Layout (512-byte sectors)::

    0               syslinux mbr.bin + partition table
    2048 ...        partition 1, FAT, active: ldlinux.sys/.c32, VMLINUZ,
                    INITRD.GZ, SYSLINUX.CFG
    after it        partition 2, type 0xDA: the data area (dataarea.py)

Nothing is mounted: the FAT image is made with ``mkfs.fat`` in a scratch
file, filled with ``mcopy`` and made bootable with the mtools flavour of
``syslinux --install``, then copied behind the MBR.  SeaBIOS loads mbr.bin,
which chains to the active partition's syslinux boot sector.

To add a file to the boot partition, pass it in ``boot_files``; to add a
partition, append a :class:`Partition` in :func:`assemble`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ferry.image.guest.dataarea import DATA_PARTITION_TYPE, SECTOR
from ferry.image.guest.errors import GuestImageError
from ferry.image.guest.tools import MTOOLS_ENV, require_tool, run

MIB = 1024 * 1024
BOOT_START_LBA = 2048  # 1 MiB, the usual alignment
FAT16_TYPE = 0x06  # FAT16 with >= 32 MiB support; also fine for small volumes
MAX_IMAGE_SIZE = 64 * MIB
MBR_CODE_SIZE = 440


@dataclass(frozen=True)
class Partition:
    start_lba: int
    sectors: int
    ptype: int
    active: bool = False


def syslinux_config(cmdline: str) -> str:
    # PROMPT 0 and no TIMEOUT: boot the default entry at once, no menu.
    return (
        "SERIAL 0 115200\n"
        "PROMPT 0\n"
        "DEFAULT ferry\n"
        "LABEL ferry\n"
        "  LINUX /VMLINUZ\n"
        "  INITRD /INITRD.GZ\n"
        f"  APPEND {cmdline}\n"
    )


def build_boot_partition(
    path: Path,
    boot_files: dict[str, Path],
    syslinux: Path,
    volume_id: int,
) -> None:
    """Create a FAT image at ``path`` holding ``boot_files`` and syslinux."""
    mkfs = require_tool("mkfs.fat")
    mcopy = require_tool("mcopy")
    require_tool("mattrib")  # syslinux --install runs it
    payload = sum(p.stat().st_size for p in boot_files.values())
    # ldlinux.sys + ldlinux.c32 are ~180 KiB; the rest covers FAT tables and
    # cluster rounding.
    size = _round_up(payload + 2 * MIB, MIB)
    run(
        [
            mkfs, "-C", "-h", str(BOOT_START_LBA), "-n", "FERRYBOOT",
            "--invariant", "-i", f"{volume_id:08X}", path, str(size // 1024),
        ]
    )  # fmt: skip
    for name, source in boot_files.items():
        run([mcopy, "-i", path, "-o", source, f"::/{name}"], env=MTOOLS_ENV)
    if not os.access(syslinux, os.X_OK):
        raise GuestImageError(f"syslinux installer {syslinux} is not executable")
    run([syslinux, "--install", path], env=MTOOLS_ENV)


def assemble(
    output: Path,
    mbr_code: bytes,
    boot_partition: Path,
    data_area: bytes,
    disk_id: int,
) -> None:
    """Write the final raw disk to ``output`` (atomically, via a temp file)."""
    if len(mbr_code) < MBR_CODE_SIZE:
        raise GuestImageError(f"mbr.bin is {len(mbr_code)} bytes, expected {MBR_CODE_SIZE}")
    boot_size = boot_partition.stat().st_size
    boot = Partition(BOOT_START_LBA, boot_size // SECTOR, FAT16_TYPE, active=True)
    data = Partition(boot.start_lba + boot.sectors, len(data_area) // SECTOR, DATA_PARTITION_TYPE)
    total = (data.start_lba + data.sectors) * SECTOR
    if total > MAX_IMAGE_SIZE:
        raise GuestImageError(
            f"guest image would be {total / MIB:.1f} MiB, over the {MAX_IMAGE_SIZE // MIB} MiB "
            "limit; is the kernel package unexpectedly large?"
        )

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(master_boot_record(mbr_code, disk_id, [boot, data]))
            out.seek(boot.start_lba * SECTOR)
            with boot_partition.open("rb") as src:
                while chunk := src.read(MIB):
                    out.write(chunk)
            out.seek(data.start_lba * SECTOR)
            out.write(data_area)
            out.truncate(total)
        tmp.chmod(0o644)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


def master_boot_record(mbr_code: bytes, disk_id: int, partitions: list[Partition]) -> bytes:
    if len(partitions) > 4:
        raise GuestImageError("an MBR holds at most 4 primary partitions")
    sector = bytearray(SECTOR)
    sector[:MBR_CODE_SIZE] = mbr_code[:MBR_CODE_SIZE]
    struct.pack_into("<I", sector, MBR_CODE_SIZE, disk_id)
    for index, part in enumerate(partitions):
        last = part.start_lba + part.sectors - 1
        entry = struct.pack(
            "<B3sB3sII",
            0x80 if part.active else 0x00,
            _chs(part.start_lba),
            part.ptype,
            _chs(last),
            part.start_lba,
            part.sectors,
        )
        sector[446 + 16 * index : 446 + 16 * (index + 1)] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _chs(lba: int) -> bytes:
    # Only legacy code reads CHS (mbr.bin uses EDD/LBA under SeaBIOS), but
    # keep the values consistent with the usual 255-head/63-sector geometry.
    heads, sectors = 255, 63
    cylinder, rest = divmod(lba, heads * sectors)
    head, sector = divmod(rest, sectors)
    if cylinder > 1023:
        cylinder, head, sector = 1023, 254, 62
    sector += 1
    return bytes([head, ((cylinder >> 2) & 0xC0) | sector, cylinder & 0xFF])


def stable_id(guest_id: str, purpose: str) -> int:
    """32-bit identifier derived from the guest id (FAT serial, MBR signature)."""
    digest = hashlib.sha256(f"{purpose}\0{guest_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") or 1


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
