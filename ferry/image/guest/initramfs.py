"""The guest's initramfs: busybox, a few kernel modules and ``/init``.

The archive is a gzip-compressed cpio "newc" stream written here in Python,
so no host ``cpio`` is needed.  Its content::

    /init                       init.sh from this package (runs as PID 1)
    /bin/busybox, /bin/sh       static busybox; /init installs the other applets
    /dev/console                so the kernel can give /init stdin/stdout
    /lib/modules/<name>.ko      uncompressed modules (busybox insmod cannot inflate)
    /etc/ferry/<group>.modules  module names of each group, in load order

``/init`` loads the ``virtio`` and ``power`` groups at once and the ``scsi``
group only if no ferry data partition shows up, keeping the common virtio
boot fast.  To support more hardware, add module names to
:data:`MODULE_GROUPS` (and load a new group from ``init.sh``).  To put more
files into the guest, add :class:`CpioEntry` items in :func:`build_initramfs`.
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ferry.image.guest.kmod import ModuleTree

# Groups of module names; dependencies are added by kmod.ModuleTree.resolve.
MODULE_GROUPS: dict[str, list[str]] = {
    # libvirt <target bus='virtio'/>: the disk is /dev/vda.
    "virtio": ["virtio_pci", "virtio_blk"],
    # ACPI power button -> input event that /init waits for.
    "power": ["button", "evdev"],
    # Fallback for /dev/sda: virtio-scsi or PIIX IDE (the cloud kernel has no AHCI).
    "scsi": ["virtio_scsi", "ata_piix", "sd_mod"],
}


@dataclass(frozen=True)
class CpioEntry:
    path: str  # inside the archive, without leading slash
    mode: int  # full st_mode including the file type bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def init_script() -> bytes:
    """The ``/init`` shell script shipped next to this module."""
    return resources.files("ferry.image.guest").joinpath("init.sh").read_bytes()


def build_initramfs(busybox: Path, modules: ModuleTree) -> bytes:
    """Gzip-compressed newc archive for the guest kernel."""
    entries = [
        *(
            CpioEntry(d, stat.S_IFDIR | 0o755)
            for d in ("bin", "dev", "etc", "etc/ferry", "lib", "lib/modules", "proc", "sys", "tmp")
        ),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        CpioEntry("init", stat.S_IFREG | 0o755, init_script()),
    ]
    added: set[str] = set()
    for group, names in MODULE_GROUPS.items():
        resolved = modules.resolve(names)
        listing = "".join(f"{m.name}\n" for m in resolved).encode()
        entries.append(CpioEntry(f"etc/ferry/{group}.modules", stat.S_IFREG | 0o644, listing))
        for module in resolved:
            if module.name not in added:
                added.add(module.name)
                entries.append(
                    CpioEntry(
                        f"lib/modules/{module.name}.ko", stat.S_IFREG | 0o644, module.load_bytes()
                    )
                )
    # mtime=0 keeps the archive byte-identical across builds of the same inputs.
    return gzip.compress(write_cpio(entries), compresslevel=9, mtime=0)


def write_cpio(entries: list[CpioEntry]) -> bytes:
    """Serialise entries as an SVR4 "newc" cpio archive (what the kernel unpacks)."""
    out = bytearray()
    for ino, entry in enumerate(entries, start=1):
        _append(out, ino, entry.path, entry.mode, entry.data, entry.rdev)
    _append(out, 0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def _append(
    out: bytearray, ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]
) -> None:
    encoded = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    out += b"070701" + b"".join(f"{value:08X}".encode() for value in fields)
    out += encoded
    _pad4(out)
    out += data
    _pad4(out)


def _pad4(out: bytearray) -> None:
    out += b"\0" * (-len(out) % 4)
