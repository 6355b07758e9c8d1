"""Tables, targets and files: what the benchmark prints and writes.

``machine()`` describes where it ran (CPU, cores, RAM, kernel, the disk and
filesystem under the work directory, tool versions).  ``tables()`` renders
one markdown table per disk with Ferry's speed-up against each peer, and
``targets()`` checks the issue's targets, each with the figures it was
judged on.  ``write()`` puts ``results.json`` and ``results.md`` in the
results directory and, if asked, replaces the generated part of
``docs/transfer-benchmark.md`` (between the BEGIN/END markers) so the prose
around it is kept.  To add a column, add it to ``_COLUMNS``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .runner import Result

BEGIN = "<!-- BEGIN GENERATED (python -m bench.transfer) -->"
END = "<!-- END GENERATED -->"
MiB = 2**20


def _cmd(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine(work: Path) -> dict[str, Any]:
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "0",
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    df = subprocess.run(
        ["df", "--output=source,fstype", str(work)], capture_output=True, text=True
    ).stdout.splitlines()
    dev, fstype = [*df[1].split(), "?", "?"][:2] if len(df) > 1 else ["?", "?"]
    rotational = "?"
    name = Path(dev).name.rstrip("0123456789") if dev.startswith("/dev/") else ""
    flag = Path(f"/sys/block/{name}/queue/rotational")
    if name and flag.exists():
        rotational = "HDD" if flag.read_text().strip() == "1" else "SSD/virtual"
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "ram_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(),
        "disk": f"{dev} ({fstype}, {rotational})",
        "python": platform.python_version(),
        "tools": {
            "qemu-img": _cmd("qemu-img", "--version"),
            "rsync": _cmd("rsync", "--version"),
            "ssh": _cmd("ssh", "-V"),
            "tar": _cmd("tar", "--version"),
        },
    }


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


_COLUMNS = [
    "tool",
    "wall s",
    "durable s",
    "MiB/s",
    "wire MiB",
    "wire/alloc",
    "CPU s src+dst",
    "peak RSS MiB src/dst",
    "identical",
    "sparse",
    "Ferry speed-up",
]


def tables(results: list[Result], disks: dict[str, dict[str, Any]]) -> str:
    out = []
    for key, info in disks.items():
        rows = [r for r in results if r.disk == key]
        if not rows:
            continue
        ferry = next((r for r in rows if r.tool == "ferry"), None)
        out.append(f"### ({key}) {info['title']}\n")
        out.append(
            f"Allocated: {info['allocated'] / MiB:.0f} MiB of {info['size'] / MiB:.0f} MiB "
            f"file ({info['virtual'] / MiB:.0f} MiB virtual).\n"
        )
        out.append("| " + " | ".join(_COLUMNS) + " |")
        out.append("|" + "---|" * len(_COLUMNS))
        for r in rows:
            speed = (
                "-"
                if ferry is None or r is ferry
                else f"{r.wall / ferry.wall:.2f}x ({r.durable / ferry.durable:.2f}x durable)"
            )
            wire = "-" if r.wire is None else f"{r.wire / MiB:.1f}"
            per = "-" if r.wire is None else f"{r.wire / info['allocated']:.3f}"
            out.append(
                f"| {r.tool} | {r.wall:.2f} | {r.durable:.2f} | {r.mib_s:.0f} | {wire} | {per} "
                f"| {r.cpu_src:.2f}+{r.cpu_dst:.2f} | {r.rss_src_mib:.0f}/{r.rss_dst_mib:.0f} "
                f"| {'yes' if r.identical else 'NO'} | {'yes' if r.sparse else 'no'} | {speed} |"
            )
        cp = next((r for r in rows if r.tool == "cp"), None)
        if cp is not None:
            out += ["", _cp_line(ferry, cp)]
        out.append("")
    return "\n".join(out)


def _cp_line(ferry: Result | None, cp: Result) -> str:
    """Ferry against the local copy, both ways of counting the copy."""
    text = (
        f"Local limit: `cp --sparse=always` {cp.wall:.2f} s (data left in the page cache), "
        f"`cp --sparse=always` + fsync of the copy {cp.durable:.2f} s (data on disk)."
    )
    if ferry is not None:
        text += (
            f"  Ferry (which fsyncs) takes {ferry.wall / cp.wall:.2f}x the plain copy and "
            f"{ferry.wall / cp.durable:.2f}x the flushed copy."
        )
    return text


# The speed targets per disk: (peer, at least this many times faster).
SPEED_TARGETS: dict[str, tuple[tuple[str, float], ...]] = {
    "a": (("rsync", 3.0), ("nbd", 2.0)),
    "b": (("rsync", 10.0), ("scp", 10.0), ("nbd", 3.0)),
    "c": (("rsync", 3.0), ("nbd", 2.0)),
}


def targets(
    results: list[Result], disks: dict[str, dict[str, Any]], resume: list[dict[str, Any]]
) -> list[tuple[str, bool | None, str]]:
    """(target, holds?, evidence); None when it could not be measured."""
    by = {(r.disk, r.tool): r for r in results}
    checks: list[tuple[str, bool | None, str]] = []
    for key, peers in SPEED_TARGETS.items():
        f = by.get((key, "ferry"))
        for peer, need in peers:
            p = by.get((key, peer))
            if f is None or p is None:
                checks.append((f"({key}) >= {need:g}x faster than {peer}", None, "not measured"))
                continue
            s = p.wall / f.wall
            checks.append(
                (
                    f"({key}) >= {need:g}x faster than {peer}",
                    s >= need,
                    f"{p.wall:.2f}s / {f.wall:.2f}s = {s:.2f}x "
                    f"(durable {p.durable / f.durable:.2f}x)",
                )
            )
    for key, info in disks.items():
        f, cp = by.get((key, "ferry")), by.get((key, "cp"))
        if f is not None and cp is not None:
            # Both readings of "the local copy": plain cp returns with the
            # data still in the page cache, Ferry only once it is on disk.
            # Ferry's wall already includes its fsync (its durable = wall).
            checks.append(
                (
                    f"({key}) within 2x of cp --sparse=always (plain, page cache)",
                    f.wall <= 2 * cp.wall,
                    f"{f.wall:.2f}s vs {cp.wall:.2f}s = {f.wall / cp.wall:.2f}x",
                )
            )
            checks.append(
                (
                    f"({key}) within 2x of cp --sparse=always + fsync (disk limit)",
                    f.wall <= 2 * cp.durable,
                    f"{f.wall:.2f}s vs {cp.durable:.2f}s = {f.wall / cp.durable:.2f}x",
                )
            )
        if f is not None and f.wire is not None:
            ratio = f.wire / info["allocated"]
            checks.append((f"({key}) wire <= 1.02x allocated", ratio <= 1.02, f"{ratio:.4f}x"))
        if f is not None:
            peak = max(f.rss_src_mib, f.rss_dst_mib)
            checks.append(
                (
                    f"({key}) peak memory < 150 MiB per side",
                    peak < 150,
                    f"{f.rss_src_mib:.0f} / {f.rss_dst_mib:.0f} MiB",
                )
            )
            checks.append(
                (
                    f"({key}) identical and sparse",
                    f.identical and f.sparse,
                    f"identical={f.identical} sparse={f.sparse}",
                )
            )
    for r in resume:
        checks.append(
            (
                f"({r['disk']}) resume after a cut at half: <= 1.1x allocated in all",
                r["ratio_wire"] <= 1.1 and r["identical"],
                f"{r['wire_up'] / MiB:.1f} MiB for {r['allocated'] / MiB:.1f} MiB = "
                f"{r['ratio_wire']:.3f}x, identical={r['identical']}",
            )
        )
    return checks


def markdown(meta: dict[str, Any], results: list[Result], resume: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    lines = [
        f"Run: {meta['started']} ({'quick' if meta['quick'] else 'full'}, median of "
        f"{meta['runs']} run(s), warm source cache, loopback).  "
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_gib']} GiB RAM, kernel "
        f"{m['kernel']}, disk {m['disk']}.  Ferry: {meta['ferry']}.",
        "",
    ]
    pressure = meta.get("cpu_pressure_avg300") or [None, None]
    if None not in pressure:
        lines += [
            f"CPU pressure from other jobs (PSI some avg300) at start / end: "
            f"{pressure[0]:.1f} % / {pressure[1]:.1f} %.",
            "",
        ]
    if meta.get("missing"):
        lines += [f"Not measured (missing tools): {meta['missing']}", ""]
    lines.append(tables(results, meta["disks"]))
    if resume:
        lines += [
            "### Resume after a cut at half way",
            "",
            "| disk | allocated MiB | sent in all MiB | ratio | attempts | identical |",
            "|---|---|---|---|---|---|",
        ]
        for r in resume:
            lines.append(
                f"| ({r['disk']}) | {r['allocated'] / MiB:.1f} | "
                f"{r['wire_up'] / MiB:.1f} | {r['ratio_wire']:.3f}x | {r['attempts']} "
                f"| {'yes' if r['identical'] else 'NO'} |"
            )
        lines.append("")
    lines += ["### Targets", "", "| target | holds | figures |", "|---|---|---|"]
    for name, ok, evidence in targets(results, meta["disks"], resume):
        mark = "n/a" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {name} | {mark} | {evidence} |")
    return "\n".join(lines) + "\n"


def write(
    out: Path,
    meta: dict[str, Any],
    results: list[Result],
    resume: list[dict[str, Any]],
    doc: Path | None,
) -> str:
    from .runner import as_dict

    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, results, resume)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": as_dict(results), "resume": resume}, indent=2)
    )
    (out / "results.md").write_text(text)
    if doc is not None:
        old = doc.read_text() if doc.exists() else f"# Transfer benchmark\n\n{BEGIN}\n{END}\n"
        if BEGIN in old and END in old:
            head, rest = old.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
        else:
            doc.write_text(f"{old.rstrip()}\n\n{BEGIN}\n{text}{END}\n")
    return text
