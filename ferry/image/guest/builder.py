"""``build_guest_image``: a tiny bootable test guest made from Debian packages.

Steps, each in its own module:

1. :mod:`packages` fetches the cloud kernel, busybox-static and syslinux
   into the cache and unpacks them (reused on later builds).
2. :mod:`initramfs` (with :mod:`kmod` for modules) packs busybox, the
   needed modules and ``init.sh`` into a gzip'd cpio archive.
3. :mod:`dataarea` produces the guest's identity, payload and boot counter.
4. :mod:`disk` writes MBR + FAT boot partition + data partition.

The result boots under SeaBIOS (QEMU/libvirt, virtio or IDE disk, 128 MiB
RAM) and prints one ``GUEST-BOOTED`` line on ttyS0 (parse it with
:mod:`marker`).  To change what the guest does, edit ``init.sh``; to change
the kernel command line, :data:`KERNEL_CMDLINE`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ferry.image.guest.dataarea import build_data_area, check_guest_id
from ferry.image.guest.disk import assemble, build_boot_partition, stable_id, syslinux_config
from ferry.image.guest.errors import GuestImageError
from ferry.image.guest.initramfs import build_initramfs
from ferry.image.guest.kmod import ModuleTree
from ferry.image.guest.packages import (
    BUSYBOX_PACKAGE,
    SYSLINUX_COMMON_PACKAGE,
    SYSLINUX_PACKAGE,
    PackageCache,
    default_cache_dir,
)
from ferry.image.guest.tools import require_tool

# quiet + loglevel=3 keep the slow TCG serial console free of kernel chatter;
# panic=5 turns a broken guest into a reboot (an exit under -no-reboot)
# instead of a hang.
KERNEL_CMDLINE = "console=ttyS0,115200 quiet loglevel=3 panic=5"


@dataclass(frozen=True)
class GuestParts:
    """Files taken from the unpacked packages."""

    kernel: Path
    module_dir: Path
    busybox: Path
    syslinux: Path
    mbr: Path


def build_guest_image(output: Path, guest_id: str, cache_dir: Path | None = None) -> Path:
    """Build a raw bootable guest disk for ``guest_id`` at ``output``; return ``output``."""
    check_guest_id(guest_id)
    # Fail before any download if the host cannot make the disk anyway.
    for tool in ("mkfs.fat", "mcopy", "mattrib"):
        require_tool(tool)
    parts = fetch_parts(cache_dir or default_cache_dir())
    initrd = build_initramfs(parts.busybox, ModuleTree(parts.module_dir))
    with tempfile.TemporaryDirectory(prefix="ferry-guest-") as tmp:
        work = Path(tmp)
        initrd_path = work / "initrd.gz"
        initrd_path.write_bytes(initrd)
        config = work / "syslinux.cfg"
        config.write_text(syslinux_config(KERNEL_CMDLINE))
        boot = work / "boot.fat"
        build_boot_partition(
            boot,
            {"VMLINUZ": parts.kernel, "INITRD.GZ": initrd_path, "SYSLINUX.CFG": config},
            parts.syslinux,
            volume_id=stable_id(guest_id, "fat"),
        )
        assemble(
            output,
            mbr_code=parts.mbr.read_bytes(),
            boot_partition=boot,
            data_area=build_data_area(guest_id),
            disk_id=stable_id(guest_id, "mbr"),
        )
    return output


def fetch_parts(cache_dir: Path) -> GuestParts:
    """Download (once) and unpack the packages; return the files the guest needs."""
    cache = PackageCache(cache_dir)
    with cache.locked():
        kernel_tree = cache.unpacked(cache.kernel_package())
        busybox_tree = cache.unpacked(BUSYBOX_PACKAGE)
        syslinux_tree = cache.unpacked(SYSLINUX_PACKAGE)
        common_tree = cache.unpacked(SYSLINUX_COMMON_PACKAGE)
    kernels = sorted((kernel_tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise GuestImageError(f"expected one vmlinuz in {kernel_tree / 'boot'}, found {kernels}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    parts = GuestParts(
        kernel=kernels[0],
        module_dir=kernel_tree / "lib" / "modules" / version,
        busybox=busybox_tree / "bin" / "busybox",
        syslinux=syslinux_tree / "usr" / "bin" / "syslinux",
        mbr=common_tree / "usr" / "lib" / "syslinux" / "mbr" / "mbr.bin",
    )
    for path in (parts.module_dir, parts.busybox, parts.syslinux, parts.mbr):
        if not path.exists():
            raise GuestImageError(f"{path} missing from the unpacked package; clear {cache_dir}")
    return parts
