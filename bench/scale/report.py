"""Render `python -m bench.scale --json FILE` results as Markdown tables.

.venv/bin/python -m bench.scale.report results.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(d: dict[str, Any] | None) -> str:
    if not d:
        return "| - | - | - | - |"
    return f"| {d['p50_ms']:.0f} | {d['p90_ms']:.0f} | {d['p99_ms']:.0f} | {d['max_ms']:.0f} |"


def decisions(r: dict[str, Any]) -> str:
    rows = [
        ("quiet", r.get("decisions_quiet")),
        (f"{r['params']['hosts']:,} hosts heartbeating", r.get("decisions_with_heartbeats")),
        (f"the conductor's own, during {r['params']['migrations']} migrations",
         r.get("decisions_during_migrations")),
        # Runs made before the set-based queries became Ferry's own also hold these.
        ("set-based what-if (older runs), quiet", r.get("what_if_set_based_quiet")),
        ("set-based what-if (older runs), heartbeating",
         r.get("what_if_set_based_with_heartbeats")),
    ]
    out = [
        "| select_destinations on the full cluster | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {name} {_ms(d)}" for name, d in rows if d]
    hb = r.get("heartbeats_during_decisions")
    if hb:
        out.append(f"\nMeanwhile the conductor handled {hb['per_second']:.0f} heartbeats/s "
                   f"(report_state p50 {hb['p50_ms']:.1f} ms, p99 {hb['p99_ms']:.1f} ms).")
    lag = r.get("loop_lag_during_migrations")
    if lag:
        out.append(f"\nDuring the migrations the one event loop ran a callback p50 "
                   f"{lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms late: a "
                   f"decision waits that again after each of its database round trips.")
    same = (r.get("what_if_set_based_quiet") or {}).get("same_host_as_baseline")
    if same:
        out.append(f"\nSet-based queries chose the same host as Ferry in {same} decisions.")
    return "\n".join(out)


def breakdown(r: dict[str, Any]) -> str:
    b = r.get("decision_breakdown_mean_ms") or {}
    if not b:
        return ""
    out = ["| phase (mean per decision, timers on) | ms |", "|---|---|"]
    out += [f"| {k} | {v:.1f} |" for k, v in sorted(b.items(), key=lambda kv: -kv[1])]
    return "\n".join(out)


def migrations(r: dict[str, Any]) -> str:
    m = r.get("migrations")
    if not m:
        return ""
    p = r["params"]
    ok = m["final_states"].get("confirmed", 0)
    lines = [
        f"- scheduler: {p.get('scheduler', 'ferry')}; "
        f"requested: {m.get('max_in_flight', 'all at once')}",
        f"- API answers: {m['migrate_codes']} (all requests answered in "
        f"{m['all_accepted_s']:.1f} s)",
        f"- at rest after {m['to_verify_resize_s']:.0f} s: {m['states_at_rest']} → "
        f"{m['throughput_to_verify_per_s']:.2f} migrations/s came to rest, "
        f"{ok / m['to_verify_resize_s']:.2f}/s successfully",
        f"- confirm of all VERIFY_RESIZE: {m['confirm_all_s']:.0f} s; end to end "
        f"{m['end_to_end_s']:.0f} s ({m['throughput_end_to_end_per_s']:.2f}/s)",
        f"- per migration, request → VERIFY_RESIZE: p50 "
        f"{m['per_migration_request_to_verify']['p50_ms'] / 1000:.0f} s, p99 "
        f"{m['per_migration_request_to_verify']['p99_ms'] / 1000:.0f} s; waiting in "
        f"scheduling: p50 {m['per_migration_in_scheduling']['p50_ms'] / 1000:.0f} s",
        "- mean seconds per state: "
        + ", ".join(f"{k} {v:.1f}" for k, v in m["mean_seconds_per_state"].items()),
        f"- failures (rolled back, server ACTIVE on its source): {dict(m['failed']) or 'none'}",
        f"- service log events: {r.get('log_events_during_migrations') or 'none'}",
        f"- allocation drift with all in VERIFY_RESIZE: {m['drift_in_verify']['drift'] or 0}; "
        f"after confirming: {m['drift_after_confirm']['drift'] or 0} "
        f"(orphan consumers {m['drift_after_confirm']['orphan_consumers']}, "
        f"missing {m['drift_after_confirm']['missing_consumers']})",
        f"- hosts reported down meanwhile: {r.get('hosts_down_after_migrations') or 'none'}",
    ]
    return "\n".join(lines)


def render(r: dict[str, Any]) -> str:
    parts = [f"### {Path(r.get('_file', '')).name}", "", "```", json.dumps(r["params"]), "```"]
    for section in (decisions(r), breakdown(r), migrations(r)):
        if section:
            parts += ["", section]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    for name in argv:
        r = json.loads(Path(name).read_text())
        r["_file"] = name
        print(render(r))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
