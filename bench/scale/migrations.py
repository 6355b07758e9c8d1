"""N concurrent cold migrations through the API and the real conductor runner."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from bench.scale.cluster import SimCluster
from bench.scale.decisions import summary
from ferry.db.models import Migration

RESTING = ("verify", "confirmed", "reverted", "error")


def _at(step: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(step["at"].rstrip("Z"))


async def _states(sim: SimCluster) -> Counter[str]:
    assert sim.observer is not None
    async with sim.observer() as s:
        rows = (
            await s.execute(select(Migration.state, func.count()).group_by(Migration.state))
        ).all()
    return Counter({state: n for state, n in rows})


async def _wait(
    sim: SimCluster,
    done: set[str],
    total: int,
    timeout: float,
    timeline: list[tuple[float, dict[str, int]]],
    t0: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await _states(sim)
        timeline.append((time.monotonic() - t0, dict(states)))
        if sum(states[s] for s in done) >= total:
            return
        await asyncio.sleep(1.0)
    raise TimeoutError(f"migrations not done after {timeout:.0f}s: {dict(states)}")


async def _post_all(
    sim: SimCluster, uuids: list[str], body: dict[str, Any], concurrency: int
) -> Counter[int]:
    assert sim.api is not None
    sem = asyncio.Semaphore(concurrency)
    codes: Counter[int] = Counter()

    async def one(u: str) -> None:
        async with sem:
            r = await sim.api.post(f"/compute/v2.1/servers/{u}/action", json=body)
            codes[r.status_code] += 1

    await asyncio.gather(*(one(u) for u in uuids))
    return codes


async def _post_in_waves(sim: SimCluster, uuids: list[str], in_flight: int) -> Counter[int]:
    """Keep at most `in_flight` migrations unfinished (what a per-conductor limit on
    concurrent migrations would do); the others wait to be requested."""
    codes: Counter[int] = Counter()
    pending = list(uuids)
    while pending:
        states = await _states(sim)
        busy = sum(v for k, v in states.items() if k not in RESTING)
        room = in_flight - busy
        if room > 0:
            batch, pending = pending[:room], pending[room:]
            codes.update(await _post_all(sim, batch, {"migrate": None}, room))
        await asyncio.sleep(0.25)
    return codes


async def run(
    sim: SimCluster,
    uuids: list[str],
    timeout: float = 3600,
    concurrency: int = 100,
    in_flight: int = 0,
) -> dict[str, Any]:
    n = len(uuids)
    out: dict[str, Any] = {"migrations": n, "max_in_flight": in_flight or "all at once"}
    timeline: list[tuple[float, dict[str, int]]] = []
    t0 = time.monotonic()
    if in_flight:
        out["migrate_codes"] = dict(await _post_in_waves(sim, uuids, in_flight))
    else:
        out["migrate_codes"] = dict(await _post_all(sim, uuids, {"migrate": None}, concurrency))
    out["all_accepted_s"] = time.monotonic() - t0
    await _wait(sim, set(RESTING), n, timeout, timeline, t0)
    t_verify = time.monotonic() - t0
    out["to_verify_resize_s"] = t_verify
    out["throughput_to_verify_per_s"] = n / t_verify
    out["states_at_rest"] = dict(await _states(sim))
    out["drift_in_verify"] = await sim.usage_check()
    assert sim.observer is not None
    async with sim.observer() as s:
        migs = list((await s.execute(select(Migration))).scalars())
    verify = [m.instance_uuid for m in migs if m.state == "verify"]
    out["failed"] = Counter((m.error or "")[:160] for m in migs if m.state == "error")
    sched_s, total_s, step_s = [], [], Counter[str]()
    for m in migs:
        steps = m.steps or []
        if m.state != "verify" or len(steps) < 2:
            continue
        sched_s.append((_at(steps[1]) - _at(steps[0])).total_seconds())
        total_s.append((_at(steps[-1]) - _at(steps[0])).total_seconds())
        for a, b in itertools.pairwise(steps):
            step_s[a["state"]] += (_at(b) - _at(a)).total_seconds()
    out["per_migration_request_to_verify"] = summary(total_s)
    out["per_migration_in_scheduling"] = summary(sched_s)
    out["mean_seconds_per_state"] = {k: v / max(1, len(total_s)) for k, v in step_s.items()}
    t1 = time.monotonic()
    out["confirm_codes"] = dict(await _post_all(sim, verify, {"confirmResize": None}, concurrency))
    await _wait(sim, {"confirmed", "reverted", "error"}, n, timeout, timeline, t0)
    out["confirm_all_s"] = time.monotonic() - t1
    out["end_to_end_s"] = time.monotonic() - t0
    out["throughput_end_to_end_per_s"] = n / out["end_to_end_s"]
    out["drift_after_confirm"] = await sim.usage_check()
    out["final_states"] = dict(await _states(sim))
    out["timeline"] = [(round(t, 1), st) for t, st in timeline[:: max(1, len(timeline) // 30)]]
    return out
