"""python -m bench.scale [--hosts 1000] [--servers 10000] [--migrations 500] ..."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.scale import decisions, migrations
from bench.scale.cluster import SimCluster


def machine() -> dict[str, str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, shell=True, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except Exception:
            return "?"

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    return {
        "cpu": f"{cpu} x {os.cpu_count()}",
        "memory": sh("free -h | awk '/Mem:/ {print $2}'"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": sh("psql -h 127.0.0.1 -U postgres -Atc 'show server_version' 2>/dev/null"),
        "disk": sh('df -h / | awk \'NR==2 {print $2" total, "$4" free"}\''),
    }


class EventCounter(logging.Handler):
    """Counts the services' warnings and errors by kind during a phase."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        for needle, label in _KINDS:
            if needle in msg:
                self.counts[label] += 1
                return
        self.counts[f"{record.levelname} {record.name}: {msg[:90]}"] += 1


_KINDS = (
    ("QueuePool limit", "database pool exhausted (30 s checkout timeout)"),
    ("lost the lease", "conductor 'lost the lease' on a migration it runs"),
    ("takes over migration", "conductor took over an orphaned migration"),
    ("heartbeat from", "heartbeat failed"),
    ("failed in", "migration step failed"),
)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ferry-bench-scale-"))
    sim = SimCluster(
        root,
        hosts=args.hosts,
        servers=args.servers,
        real_fill=args.real_fill,
        seed=args.seed,
        report_interval=args.report_interval,
        n_conductors=args.conductors,
    )
    result: dict[str, Any] = {"params": vars(args), "machine": machine()}
    try:
        await sim.start()
        await sim.fill()
        result["setup_seconds"] = sim.timings
        log.info("cluster ready: %s", {k: round(v, 1) for k, v in sim.timings.items()})
        fill = [t for _n, t in sim.fill_decisions]
        if fill:
            k = max(1, len(fill) // 10)
            result["fill_decisions_first_tenth"] = decisions.summary(fill[:k])
            result["fill_decisions_last_tenth"] = decisions.summary(fill[-k:])
        result["drift_after_fill"] = await sim.usage_check()
        assert sim.sessions is not None
        down = sim.settings.service_down_time
        cache = sim.conductors[0].ctx.host_cache
        if not args.skip_decisions:
            # Quiet: nothing else runs, the decision alone.
            sim.pause_heartbeats()
            log.info(
                "measuring %d decisions on the full cluster (heartbeats paused)", args.decisions
            )
            stats, _ = await decisions.measure(sim.sessions, args.decisions, down, cache=cache)
            result["decisions_quiet"] = stats
            result["decision_breakdown_mean_ms"] = await decisions.breakdown(
                sim.sessions, max(10, args.decisions // 5), down, cache
            )
            result["decision_profile"] = await decisions.profile(sim.sessions, 20, down,
                                                                cache=cache)
            # Loaded: every host heartbeats every report_interval meanwhile.
            sim.resume_heartbeats()
            await asyncio.sleep(args.report_interval)
            log.info(
                "measuring %d decisions with %d hosts heartbeating", args.decisions, args.hosts
            )
            t = time.perf_counter()
            with decisions.timed_heartbeats(sim.conductors) as beats:
                result["decisions_with_heartbeats"], _ = await decisions.measure(
                    sim.sessions, args.decisions, down, seed=8, cache=cache
                )
            result["heartbeats_during_decisions"] = {
                **decisions.summary(beats),
                "per_second": len(beats) / (time.perf_counter() - t),
            }
        if args.migrations:
            uuids = await sim.movable(args.migrations)
            t = time.perf_counter()
            await sim.give_disks(uuids)
            sim.timings[f"give {len(uuids)} moving servers a real disk"] = time.perf_counter() - t
            log.info("migrating %d servers at once", len(uuids))
            events = EventCounter()
            logging.getLogger().addHandler(events)
            try:
                with decisions.timed_in_conductor() as made, decisions.loop_lag() as lag:
                    result["migrations"] = await migrations.run(
                        sim, uuids, in_flight=args.max_in_flight
                    )
                result["decisions_during_migrations"] = decisions.summary(made)
                result["loop_lag_during_migrations"] = decisions.summary(lag)
            except Exception as exc:
                # Keep what was measured so far (the decision timings take minutes
                # to set up); e.g. PostgreSQL refusing connections on a shared box.
                log.exception("the migration phase failed")
                result["migrations_error"] = f"{type(exc).__name__}: {exc}"
            finally:
                logging.getLogger().removeHandler(events)
                result["log_events_during_migrations"] = dict(events.counts.most_common(15))
            result["hosts_down_after_migrations"] = await sim.hosts_down()
    finally:
        await sim.stop()
    return result


log = logging.getLogger("bench.scale")


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--servers", type=int, default=10000)
    p.add_argument(
        "--real-fill",
        type=int,
        default=300,
        help="servers placed through select_destinations (the rest in bulk)",
    )
    p.add_argument(
        "--decisions",
        type=int,
        default=200,
        help="select_destinations calls timed on the full cluster",
    )
    p.add_argument("--migrations", type=int, default=500)
    p.add_argument(
        "--report-interval",
        type=float,
        default=10.0,
        help="compute heartbeat period (Nova's default: 10 s)",
    )
    p.add_argument(
        "--conductors",
        type=int,
        default=1,
        help="ConductorEndpoints (each with its own database pool)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="request the migrations so that at most this many are unfinished "
        "(0: all at once, the issue's scenario)",
    )
    p.add_argument(
        "--skip-decisions", action="store_true", help="skip the decision-time measurements"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the full results here")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.setLevel(logging.INFO)

    def _term(*_: object) -> None:
        raise KeyboardInterrupt  # asyncio.run cancels main(): the database is dropped

    signal.signal(signal.SIGTERM, _term)
    started = time.monotonic()
    result = asyncio.run(main(args))
    result["wall_seconds"] = time.monotonic() - started
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    profile = result.pop("decision_profile", "")
    print(json.dumps(result, indent=2, default=str))
    print(profile)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
