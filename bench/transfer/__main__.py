"""``python -m bench.transfer``: build the test disks, move them with every tool, report.

    .venv/bin/python -m bench.transfer            # full run (~10 min), updates the doc
    .venv/bin/python -m bench.transfer --quick    # sizes / 8, one run: a CI smoke test

Needs root for the private sshd (it runs ``sshd -i`` as our child with its
own keys; no system service is touched).  Missing tools are reported and
skipped: install with ``apt-get install openssh-server rsync netcat-openbsd
qemu-utils``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .disks import build
from .procs import ssh_setup
from .report import machine, write
from .runner import Result, cpu_pressure, measure_resume, measure_tool
from .tools import TOOLS, Ctx, missing

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.transfer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="disks / 8 and one run (CI smoke)")
    p.add_argument("--runs", type=int, help="timed runs per tool and disk (median; default 3)")
    p.add_argument("--disks", default="abc", help="which disks: any of a, b, c")
    p.add_argument("--tools", default=",".join(t.name for t in TOOLS))
    p.add_argument("--streams", type=int, default=2, help="Ferry's parallel streams")
    p.add_argument("--chunk-mib", type=int, default=4, help="Ferry's chunk size")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where disks are built (default: a temp dir "
        "under /var/tmp, on the same filesystem as the results of every tool)",
    )
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "transfer" / "results")
    p.add_argument(
        "--doc",
        type=Path,
        default=ROOT / "docs" / "transfer-benchmark.md",
        help="markdown file whose generated section is replaced",
    )
    p.add_argument("--no-doc", action="store_true", help="do not touch --doc")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)

    wanted = [t for t in TOOLS if t.name in args.tools.split(",")]
    absent = {t.name: missing(t) for t in wanted if missing(t)}
    for name, exes in absent.items():
        print(
            f"skipping {name}: missing {', '.join(exes)} "
            "(apt-get install openssh-server rsync netcat-openbsd qemu-utils)",
            file=sys.stderr,
        )
    tools = [t for t in wanted if t.name not in absent]
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        print(
            "qemu-img and qemu-io are needed to build the disks (apt-get install qemu-utils)",
            file=sys.stderr,
        )
        return 2
    if any(t.name in ("rsync", "scp") for t in tools) and os.geteuid() != 0:
        print(
            "rsync/scp need root for the private sshd; run as root or drop them with --tools",
            file=sys.stderr,
        )
        return 2

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-bench-", dir="/var/tmp"))
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    pressure_before = cpu_pressure()
    try:
        print(f"building disks in {work} ...", flush=True)
        disks = build(work / "disks", args.quick, args.disks)
        ssh = ssh_setup(work / "ssh") if any(t.name in ("rsync", "scp") for t in tools) else None
        ctx = Ctx(
            python=sys.executable,
            ssh=ssh,
            streams=args.streams,
            chunk_mib=args.chunk_mib,
            work=work,
        )
        results: list[Result] = []
        resume = []
        for disk in disks:
            print(
                f"({disk.key}) {disk.title}: {disk.allocated / 2**20:.0f} MiB allocated", flush=True
            )
            for tool in tools:
                results.append(measure_tool(tool, disk, ctx, runs, work / "out"))
            ferry = next((t for t in tools if t.name == "ferry"), None)
            if ferry is not None:
                resume.append(measure_resume(ferry, disk, ctx, work / "out"))
        meta = {
            "started": started,
            "quick": args.quick,
            "runs": runs,
            "machine": machine(work),
            "ferry": f"{args.streams} streams, {args.chunk_mib} MiB chunks, checksums on, "
            "no compression, no TLS, fsync before commit",
            "missing": absent,
            # Other jobs on the machine inflate times; PSI says how much.
            "cpu_pressure_avg300": [pressure_before, cpu_pressure()],
            "disks": {
                d.key: {
                    "title": d.title,
                    "allocated": d.allocated,
                    "size": d.size,
                    "virtual": d.virtual,
                }
                for d in disks
            },
        }
        stamp = started.replace(":", "").replace("-", "")[:15]
        out = args.results / (("quick-" if args.quick else "") + stamp)
        doc = None if args.no_doc or args.quick else args.doc
        print(write(out, meta, results, resume, doc))
        print(f"results in {out}" + (f"; {doc} updated" if doc else ""))
        return 0
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
