"""The benchmark's test disks, built in a temporary directory.

(a) ``qcow2``: 8 GiB virtual, 1.5 GiB of random data in scattered regions
    (built from (b) with ``qemu-img convert``, so only data clusters exist);
(b) ``raw``: a sparse file, 8 GiB virtual, the same 1.5 GiB allocated;
(c) ``overlay``: a qcow2 overlay with 200 MiB of random data written over a
    1 GiB base (``qemu-io write -s``); only the overlay is moved, its
    backing path is absolute so copies in other directories still find it.

Scattered means: 184 regions of 8 MiB at random 4 KiB-aligned offsets (so
region edges are not 64 KiB-aligned), each in its own slot of 1/368 of the
disk, plus 1024 single 64 KiB blocks spread over the other slots, all random
bytes (incompressible).  ``quick`` divides every size by 8.
To add a disk, write a builder returning a :class:`Disk` and list it in
:func:`build`.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass
class Disk:
    key: str
    title: str
    path: Path  # the file that is moved
    fmt: str  # format for qemu-img compare / convert
    virtual: int
    backing: Path | None = None

    @property
    def allocated(self) -> int:
        return os.stat(self.path).st_blocks * 512

    @property
    def size(self) -> int:
        return os.stat(self.path).st_size


def build(workdir: Path, quick: bool, only: str = "abc") -> list[Disk]:
    scale = 8 if quick else 1
    workdir.mkdir(parents=True, exist_ok=True)
    disks: list[Disk] = []
    raw = workdir / "b.raw"
    if "a" in only or "b" in only:
        _raw_with_regions(raw, 8 * GiB // scale, 184, 8 * MiB // scale, 1024 // scale, 64 * KiB)
    if "a" in only:
        qcow = workdir / "a.qcow2"
        _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow))
        disks.append(
            Disk("a", "qcow2, 8 GiB virtual, 1.5 GiB data", qcow, "qcow2", 8 * GiB // scale)
        )
    if "b" in only:
        disks.append(
            Disk("b", "raw sparse, 8 GiB virtual, 1.5 GiB allocated", raw, "raw", 8 * GiB // scale)
        )
    elif raw.exists():
        raw.unlink()
    if "c" in only:
        disks.append(_overlay(workdir, GiB // scale, 200 * MiB // scale))
    for disk in disks:
        disk.title = disk.title if not quick else disk.title + " (quick: sizes / 8)"
    return disks


def _raw_with_regions(
    path: Path, size: int, regions: int, region: int, blocks: int, block: int
) -> None:
    """Regions in half of ``2 * regions`` equal slots, single blocks in the others."""
    rng = random.Random(20240613)
    slot = size // (2 * regions)
    order = list(range(2 * regions))
    rng.shuffle(order)
    region_slots, block_slots = order[:regions], order[regions:]
    writes = [
        (s * slot + rng.randrange(0, (slot - region) // (4 * KiB)) * 4 * KiB, region)
        for s in region_slots
    ]
    taken: set[int] = set()
    while len(taken) < blocks:
        s = rng.choice(block_slots)
        taken.add(s * slot // block * block + rng.randrange(0, slot // block - 1) * block)
    writes += [(offset, block) for offset in taken]
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in sorted(writes):
            f.seek(offset)
            f.write(os.urandom(length))


def _overlay(workdir: Path, base_size: int, written: int) -> Disk:
    base_raw, base = workdir / "base.raw", workdir / "base.qcow2"
    with open(base_raw, "wb") as f:
        f.truncate(base_size)
        for offset in range(0, base_size * 3 // 4, 64 * MiB):  # 3/4 of the base has data
            f.seek(offset)
            f.write(os.urandom(min(48 * MiB, base_size - offset)))
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(base_raw), str(base))
    base_raw.unlink()
    overlay = workdir / "c.qcow2"
    _run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        str(base.resolve()),
        "-F",
        "qcow2",
        str(overlay),
        str(base_size),
    )
    pieces = 25
    piece = written // pieces
    rng = random.Random(7)
    slots = rng.sample(range(base_size // piece), pieces)
    commands: list[str] = []
    patterns = []
    for i, slot in enumerate(sorted(slots)):
        pattern = workdir / f"pattern{i}"
        pattern.write_bytes(os.urandom(piece))
        patterns.append(pattern)
        commands += ["-c", f"write -q -s {pattern} {slot * piece} {piece}"]
    _run("qemu-io", "-f", "qcow2", *commands, str(overlay))
    for pattern in patterns:
        pattern.unlink()
    return Disk(
        "c",
        "qcow2 overlay, 200 MiB written over a 1 GiB base",
        overlay,
        "qcow2",
        base_size,
        backing=base,
    )


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
