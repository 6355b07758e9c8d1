"""Host filters: each says yes or no for one host and one request.

To add a filter: write a function `(HostState, RequestSpec) -> str | None`
returning None to pass or a short reason to reject, and append it to
`DEFAULT_FILTERS`. Reasons are logged so "No valid host" can be explained.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.scheduler.hoststate import HostState, RequestSpec

Filter = Callable[[HostState, RequestSpec], str | None]


def compute_filter(host: HostState, spec: RequestSpec) -> str | None:
    if not host.enabled:
        return "service disabled"
    if not host.up:
        return "service down"
    return None


def ignore_hosts_filter(host: HostState, spec: RequestSpec) -> str | None:
    return "ignored (source host)" if host.host in spec.ignore_hosts else None


def requested_host_filter(host: HostState, spec: RequestSpec) -> str | None:
    if spec.requested_host and host.host != spec.requested_host:
        return "not the requested host"
    return None


def availability_zone_filter(host: HostState, spec: RequestSpec) -> str | None:
    if spec.availability_zone and host.zone != spec.availability_zone:
        return f"in zone {host.zone}, not {spec.availability_zone}"
    return None


def resources_filter(host: HostState, spec: RequestSpec) -> str | None:
    for rc, amount in spec.resources.items():
        if amount > host.free(rc):
            return f"not enough {rc} ({host.free(rc)} free, {amount} wanted)"
    return None


DEFAULT_FILTERS: tuple[Filter, ...] = (
    compute_filter,
    ignore_hosts_filter,
    requested_host_filter,
    availability_zone_filter,
    resources_filter,
)


def filter_hosts(
    hosts: list[HostState], spec: RequestSpec, filters: tuple[Filter, ...] = DEFAULT_FILTERS
) -> tuple[list[HostState], dict[str, str]]:
    passed: list[HostState] = []
    rejected: dict[str, str] = {}
    for h in hosts:
        for f in filters:
            reason = f(h, spec)
            if reason is not None:
                rejected[h.host] = reason
                break
        else:
            passed.append(h)
    return passed, rejected
