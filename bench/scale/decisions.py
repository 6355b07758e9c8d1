"""Scheduler decision time on the full cluster: p50/p99 and where the time goes.

A decision is one `select_destinations` call in its own transaction (filters,
weighers, the claim on the chosen host), as the conductor's SCHEDULING step and
`servers.build` make it, with the conductor's host-state cache. The claim is
committed and then deleted (not timed), so every decision sees the same
10,000-server cluster and, like a real one, a provider changed since the last.
"""

from __future__ import annotations

import asyncio
import contextvars
import cProfile
import functools
import io
import pstats
import random
import statistics
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.conductor import records
from ferry.db.models import Flavor
from ferry.scheduler import placement
from ferry.scheduler import scheduler as sched
from ferry.scheduler.hostcache import HostStateCache
from ferry.scheduler.hoststate import RequestSpec

Sessions = async_sessionmaker[AsyncSession]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.5),
        "p90_ms": percentile(ms, 0.9),
        "p99_ms": percentile(ms, 0.99),
        "mean_ms": statistics.fmean(ms) if ms else 0.0,
        "max_ms": max(ms) if ms else 0.0,
    }


async def _specs(sessions: Sessions, n: int, seed: int) -> list[RequestSpec]:
    rng = random.Random(seed)
    async with sessions() as s:
        flavors = list((await s.execute(select(Flavor).order_by(Flavor.id))).scalars())
    return [
        RequestSpec(
            str(uuidlib.uuid4()),
            "project-bench",
            "user-bench",
            records.flavor_resources(rng.choice(flavors)),
        )
        for _ in range(n)
    ]


async def decide(sessions: Sessions, spec: RequestSpec, down_after: float,
                  cache: HostStateCache | None) -> tuple[str, float]:
    async with sessions() as s:
        async with s.begin():
            t = time.perf_counter()
            sel = await sched.select_destinations(s, spec, down_after=down_after,
                                                  max_attempts=3, cache=cache)
            took = time.perf_counter() - t
        # The claim is committed, then given back: the cluster stays the same for
        # every decision, and the next one finds this host's generation moved, as
        # it would after a real claim (a rolled-back claim would leave a cache
        # nothing to re-read).
        async with s.begin():
            await placement.delete_allocations(s, spec.instance_uuid)
    return sel.host, took


async def measure(
    sessions: Sessions, n: int, down_after: float, seed: int = 7,
    cache: HostStateCache | None = None,
) -> tuple[dict[str, float], list[str]]:
    hosts, took = [], []
    for spec in await _specs(sessions, n, seed):
        host, t = await decide(sessions, spec, down_after, cache)
        hosts.append(host)
        took.append(t)
    return summary(took), hosts


@contextmanager
def timed_heartbeats(conductors: list[Any]) -> Iterator[list[float]]:
    """Wall time of every `report_state` the conductors handle meanwhile (the bus
    looks the method up on the instance per message, so wrapping it there works)."""
    took: list[float] = []
    for cond in conductors:
        original = cond.report_state

        @functools.wraps(original)
        async def timed(*a: Any, _original: Any = original, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return await _original(*a, **kw)
            finally:
                took.append(time.perf_counter() - t)

        cond.report_state = timed
    try:
        yield took
    finally:
        for cond in conductors:
            del cond.report_state  # back to the class's method


@contextmanager
def timed_in_conductor() -> Iterator[list[float]]:
    """Wall time of every `select_destinations` the conductors' SCHEDULING steps
    make meanwhile (the step looks the name up in its module on each call)."""
    from ferry.conductor import steps

    took: list[float] = []
    original = steps.select_destinations

    async def timed(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return await original(*a, **kw)
        finally:
            took.append(time.perf_counter() - t)

    steps.select_destinations = timed  # type: ignore[assignment]
    try:
        yield took
    finally:
        steps.select_destinations = original


@contextmanager
def loop_lag(every: float = 0.01) -> Iterator[list[float]]:
    """How late the event loop runs a callback meanwhile: a decision awaits the
    database several times, and after each await it waits this long again for
    its turn behind everything else the one loop serves (hosts, API, data plane)."""
    lags: list[float] = []

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(every)
            lags.append(loop.time() - t - every)

    task = asyncio.get_running_loop().create_task(probe())
    try:
        yield lags
    finally:
        task.cancel()


# -- where the time goes ------------------------------------------------------------------

_phase: contextvars.ContextVar[str] = contextvars.ContextVar("phase", default="")


@contextmanager
def _patched(targets: list[tuple[Any, str, str]], sink: dict[str, list[float]]) -> Iterator[None]:
    """Wrap async functions (module, attribute, label) with wall-clock timers."""
    saved = []
    for module, attr, label in targets:
        original = getattr(module, attr)
        saved.append((module, attr, original))

        def wrap(
            fn: Callable[..., Awaitable[Any]], label: str = label
        ) -> Callable[..., Awaitable[Any]]:
            async def timed(*a: Any, **kw: Any) -> Any:
                outer = _phase.get()
                token = _phase.set(label if label in ("host_states", "claim") else outer)
                t = time.perf_counter()
                try:
                    return await fn(*a, **kw)
                finally:
                    key = (
                        f"{label} (in {outer})"
                        if outer and label not in ("host_states", "claim")
                        else label
                    )
                    sink[key].append(time.perf_counter() - t)
                    _phase.reset(token)

            return timed

        setattr(module, attr, wrap(original))
    try:
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


def _sync_timer(module: Any, attr: str, sink: dict[str, list[float]]) -> Any:
    original = getattr(module, attr)

    def timed(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            sink[attr].append(time.perf_counter() - t)

    setattr(module, attr, timed)
    return original


async def breakdown(sessions: Sessions, n: int, down_after: float,
                    cache: HostStateCache | None = None) -> dict[str, float]:
    """Mean milliseconds per decision in each phase."""
    sink: dict[str, list[float]] = defaultdict(list)
    targets = [
        (sched, "host_states", "host_states"),
        (placement, "claim", "claim"),
        (HostStateCache, "_read", "re-read changed providers"),
        (placement, "_bump_generation", "_bump_generation"),
        (placement, "provider_inventory", "provider_inventory"),
        (placement, "provider_usage", "provider_usage"),
    ]
    specs = await _specs(sessions, n, seed=11)
    filt = _sync_timer(sched, "filter_hosts", sink)
    wgh = _sync_timer(sched, "weigh", sink)
    try:
        with _patched(targets, sink):
            total = []
            for spec in specs:
                _host, t = await decide(sessions, spec, down_after, cache)
                total.append(t)
    finally:
        sched.filter_hosts, sched.weigh = filt, wgh
    out = {"decision": statistics.fmean(total) * 1000}
    for key, vals in sorted(sink.items()):
        out[key] = sum(vals) * 1000 / n
    return out


async def profile(sessions: Sessions, n: int, down_after: float, top: int = 18,
                  cache: HostStateCache | None = None) -> str:
    """cProfile of `n` decisions, sorted by own time (tottime)."""
    specs = await _specs(sessions, n, seed=13)
    prof = cProfile.Profile()
    prof.enable()
    for spec in specs:
        await decide(sessions, spec, down_after, cache)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(
        ln.replace("/work/main/", "").replace("/work/main/.venv/lib/python3.11/site-packages/", "")
        for ln in lines[start:]
    )
