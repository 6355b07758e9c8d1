"""Weighers rank the hosts that passed the filters; higher weight wins.

Each weigher returns a raw value per host; values are normalised to 0..1
across the candidates (as Nova does) and summed with a multiplier. The
defaults spread load: most free RAM, then CPU, then disk. To add one, write
`(HostState) -> float` and add it with its multiplier to `DEFAULT_WEIGHERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.scheduler.hoststate import HostState

Weigher = Callable[[HostState], float]


def ram_weigher(h: HostState) -> float:
    return float(h.free("MEMORY_MB"))


def cpu_weigher(h: HostState) -> float:
    return float(h.free("VCPU"))


def disk_weigher(h: HostState) -> float:
    return float(h.free("DISK_GB"))


DEFAULT_WEIGHERS: tuple[tuple[Weigher, float], ...] = (
    (ram_weigher, 1.0),
    (cpu_weigher, 1.0),
    (disk_weigher, 1.0),
)


def _normalise(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0 for _ in values]
    return [(v - lo) / (hi - lo) for v in values]


def weigh(hosts: list[HostState],
          weighers: tuple[tuple[Weigher, float], ...] = DEFAULT_WEIGHERS) -> list[HostState]:
    if not hosts:
        return []
    totals = [0.0] * len(hosts)
    for weigher, multiplier in weighers:
        for i, v in enumerate(_normalise([weigher(h) for h in hosts])):
            totals[i] += multiplier * v
    # Ties break by name so decisions are reproducible in tests and logs.
    order = sorted(range(len(hosts)), key=lambda i: (-totals[i], hosts[i].host))
    return [hosts[i] for i in order]
