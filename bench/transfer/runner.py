"""Runs every tool on every disk and collects the figures.

For each disk and tool: one untimed warm-up run through the counting relay
(the bytes on the wire), then ``runs`` timed runs (destination removed and
``sync`` done before each, source left in the page cache: warm cache, as
dropping caches is neither possible here nor what a migration sees right
after the guest stopped).  After each run the destination file is fsynced by
the benchmark: ``durable`` = wall + that fsync, which makes tools that do
not flush (all but Ferry) comparable with one that does.  Each result is
checked with ``qemu-img compare`` and for sparseness.

Ferry's resume is measured by cutting every connection at half the
allocated bytes (through the relay) and letting the sender's retry resume.
To add a measurement, add a field to :class:`Result` and fill it in
:func:`measure_tool`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .disks import Disk
from .proxy import Relay
from .tools import Ctx, Measured, Tool


@dataclass
class Result:
    disk: str
    tool: str
    runs: int
    wall: float  # median seconds, process start to both sides exited
    durable: float  # median wall + fsync of the result
    walls: list[float]
    mib_s: float  # allocated MiB of the source / median wall
    wire: int | None  # bytes through the socket (both directions), from the relay
    wire_up: int | None
    cpu_src: float  # median CPU seconds (user + sys), sending side
    cpu_dst: float
    rss_src_mib: float  # peak RSS, largest process of the side
    rss_dst_mib: float
    identical: bool
    sparse: bool
    dst_allocated: int
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_pressure() -> float | None:
    """Share of the last 5 minutes some task waited for a CPU (PSI), in %."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return float(line.split("avg300=")[1].split()[0])


def fsync_file(path: Path) -> float:
    started = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - started


def identical(disk: Disk, result: Path) -> bool:
    done = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", disk.fmt, "-F", disk.fmt, str(disk.path), str(result)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return done.returncode == 0


def _one(
    tool: Tool, disk: Disk, ctx: Ctx, out: Path, relay_args: dict[str, Any] | None
) -> tuple[Measured, float, bool, int, Relay | None]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.sync()
    relays: list[Relay] = []

    def relayer(port: int) -> Relay | None:
        if relay_args is None:
            return None
        relay = Relay(("127.0.0.1", port), **relay_args)
        relays.append(relay)
        return relay

    try:
        measured = tool.run(disk, out, ctx, relayer)
    finally:
        for relay in relays:
            relay.close()
    result = out / disk.path.name
    sync = fsync_file(result)
    same = identical(disk, result)
    allocated = os.stat(result).st_blocks * 512
    shutil.rmtree(out)
    return measured, sync, same, allocated, relays[0] if relays else None


def measure_tool(
    tool: Tool, disk: Disk, ctx: Ctx, runs: int, out: Path, log: Any = print
) -> Result:
    # First an untimed warm-up run, for every tool alike: through the relay
    # for network tools (that is where the bytes on the wire are counted).
    relay_args = {} if tool.network else None
    measured, _, same, alloc, relay = _one(tool, disk, ctx, out, relay_args)
    all_same, worst_alloc = same, alloc
    wire = wire_up = None
    if relay is not None:
        wire, wire_up = relay.up + relay.down, relay.up
        log(f"    {tool.name:7s} warm-up through the relay: {wire / 2**20:9.1f} MiB on the wire")
    timed: list[tuple[Measured, float]] = []
    extra = measured.extra
    for i in range(runs):
        measured, sync, same, alloc, _ = _one(tool, disk, ctx, out, None)
        timed.append((measured, sync))
        all_same &= same
        worst_alloc = max(worst_alloc, alloc)
        extra = measured.extra or extra
        log(
            f"    {tool.name:7s} run {i + 1}/{runs}: {measured.wall:7.2f}s "
            f"(+{sync:.2f}s fsync) identical={same}"
        )
    walls = [m.wall for m, _ in timed]
    wall = statistics.median(walls)
    return Result(
        disk=disk.key,
        tool=tool.name,
        runs=runs,
        wall=wall,
        durable=statistics.median(m.wall + s for m, s in timed),
        walls=walls,
        mib_s=disk.allocated / 2**20 / wall,
        wire=wire,
        wire_up=wire_up,
        cpu_src=statistics.median(m.src.cpu for m, _ in timed),
        cpu_dst=statistics.median(m.dst.cpu for m, _ in timed),
        rss_src_mib=max(m.src.maxrss_kib for m, _ in timed) / 1024,
        rss_dst_mib=max(m.dst.maxrss_kib for m, _ in timed) / 1024,
        identical=all_same,
        sparse=worst_alloc <= 1.05 * disk.allocated,
        dst_allocated=worst_alloc,
        extra={k: extra[k] for k in ("bytes_sent", "wire_bytes", "attempts") if k in extra},
    )


def measure_resume(
    ferry: Tool, disk: Disk, ctx: Ctx, out: Path, log: Any = print
) -> dict[str, Any]:
    """Cut every connection at half of the allocated bytes; let Ferry resume."""
    measured, _, same, _, relay = _one(ferry, disk, ctx, out, {"cut_at": disk.allocated // 2})
    assert relay is not None
    info = {
        "disk": disk.key,
        "allocated": disk.allocated,
        "cut_at": disk.allocated // 2,
        "cuts": relay.cuts,
        "wire_up": relay.up,
        "ratio_wire": relay.up / disk.allocated,
        "bytes_sent": measured.extra.get("bytes_sent"),
        "ratio_payload": measured.extra.get("bytes_sent", 0) / disk.allocated,
        "attempts": measured.extra.get("attempts"),
        "wall": measured.wall,
        "identical": same,
    }
    log(
        f"    resume: cut {relay.cuts}x at {info['cut_at'] / 2**20:.0f} MiB, "
        f"{relay.up / 2**20:.1f} MiB sent in all ({info['ratio_wire']:.3f}x allocated), "
        f"identical={same}"
    )
    return info


def as_dict(results: list[Result]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
