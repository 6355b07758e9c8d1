"""Picking kernel modules out of an unpacked kernel package.

The Debian package ships no ``modules.dep`` (depmod runs at install time), so
dependencies are read from each module's ``.modinfo`` ELF section
(``depends=a,b``).  Modules the kernel has built in (``modules.builtin``)
are skipped.  :func:`resolve` returns modules in load order, so busybox
``insmod`` (which does no dependency handling) can load them one by one.

To support more guest hardware, add the driver's module name to a group in
``initramfs.MODULE_GROUPS``; its dependencies follow automatically.
"""

from __future__ import annotations

import gzip
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from ferry.image.guest.errors import GuestImageError

_SUFFIXES = (".ko", ".ko.xz", ".ko.gz")


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: Path

    def load_bytes(self) -> bytes:
        """The module as insmod needs it: busybox insmod cannot decompress."""
        data = self.path.read_bytes()
        if self.path.name.endswith(".xz"):
            return lzma.decompress(data)
        if self.path.name.endswith(".gz"):
            return gzip.decompress(data)
        return data


class ModuleTree:
    """Index of ``lib/modules/<version>`` inside an unpacked kernel package."""

    def __init__(self, moddir: Path) -> None:
        self.moddir = moddir
        self.modules: dict[str, Path] = {}
        for path in sorted(moddir.rglob("*.ko*")):
            for suffix in _SUFFIXES:
                if path.name.endswith(suffix):
                    self.modules[_canonical(path.name.removesuffix(suffix))] = path
        builtin = moddir / "modules.builtin"
        self.builtin: set[str] = set()
        if builtin.is_file():
            for line in builtin.read_text().splitlines():
                self.builtin.add(_canonical(Path(line.strip()).name.removesuffix(".ko")))

    def resolve(self, names: list[str]) -> list[KernelModule]:
        """Modules for ``names`` plus dependencies, dependencies first."""
        ordered: list[KernelModule] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            name = _canonical(name)
            if name in seen or name in self.builtin:
                return
            if name in chain:
                raise GuestImageError(f"module dependency loop: {' -> '.join((*chain, name))}")
            path = self.modules.get(name)
            if path is None:
                raise GuestImageError(
                    f"kernel module {name!r} is neither built in nor shipped in {self.moddir}"
                )
            module = KernelModule(name, path)
            for dep in _depends(module.load_bytes()):
                visit(dep, (*chain, name))
            seen.add(name)
            ordered.append(module)

        for name in names:
            visit(name, ())
        return ordered


def _canonical(name: str) -> str:
    # The kernel treats '-' and '_' in module names as the same character.
    return name.replace("-", "_")


def _depends(elf: bytes) -> list[str]:
    info = _section(elf, ".modinfo")
    for entry in info.split(b"\0"):
        if entry.startswith(b"depends="):
            value = entry.removeprefix(b"depends=").decode()
            return [dep for dep in value.split(",") if dep]
    return []


def _section(elf: bytes, wanted: str) -> bytes:
    """Contents of one section of a little-endian ELF64 relocatable object."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise GuestImageError("kernel module is not a little-endian ELF64 object")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name = struct.unpack_from("<I", elf, base)[0]
        offset, size = struct.unpack_from("<QQ", elf, base + 0x18)
        return name, offset, size

    _, str_off, str_size = header(shstrndx)
    names = elf[str_off : str_off + str_size]
    for index in range(shnum):
        name_off, offset, size = header(index)
        end = names.find(b"\0", name_off)
        if names[name_off:end].decode() == wanted:
            return elf[offset : offset + size]
    return b""
