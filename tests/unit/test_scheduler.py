"""Filters, weighers and select_destinations (`ferry.scheduler`): which host a
migration goes to, and why the others were refused."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ferry.db.models import utcnow
from ferry.scheduler import placement
from ferry.scheduler.filters import (
    DEFAULT_FILTERS,
    availability_zone_filter,
    compute_filter,
    filter_hosts,
    ignore_hosts_filter,
    requested_host_filter,
    resources_filter,
)
from ferry.scheduler.hoststate import HostState, RequestSpec, is_up
from ferry.scheduler.placement import InventoryRecord
from ferry.scheduler.scheduler import NoValidHost, Selection, host_states, select_destinations
from ferry.scheduler.weighers import weigh
from tests.support.placement import add_compute, inventory

Sessions = async_sessionmaker[AsyncSession]

SMALL = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10}


def _host(name: str = "h1", *, zone: str = "nova", enabled: bool = True, up: bool = True,
          vcpu: int = 8, ram: int = 4096, disk: int = 100,
          used: dict[str, int] | None = None) -> HostState:
    return HostState(host=name, zone=zone, enabled=enabled, up=up,
                     inventory=inventory(vcpu, ram, disk), used=used or {})


def _spec(*, ignore_hosts: tuple[str, ...] = (), requested_host: str | None = None,
          availability_zone: str | None = None) -> RequestSpec:
    return RequestSpec(instance_uuid="vm1", project_id="p", user_id="u",
                       resources=dict(SMALL), availability_zone=availability_zone,
                       ignore_hosts=ignore_hosts, requested_host=requested_host)


# -- filters -----------------------------------------------------------------------------


def test_compute_filter() -> None:
    assert compute_filter(_host(), _spec()) is None
    assert compute_filter(_host(enabled=False), _spec()) == "service disabled"
    assert compute_filter(_host(up=False), _spec()) == "service down"
    assert compute_filter(_host(enabled=False, up=False), _spec()) == "service disabled"


def test_ignore_hosts_filter_keeps_the_source_out() -> None:
    spec = _spec(ignore_hosts=("src",))
    assert ignore_hosts_filter(_host("src"), spec) == "ignored (source host)"
    assert ignore_hosts_filter(_host("dst"), spec) is None


def test_requested_host_filter() -> None:
    assert requested_host_filter(_host("h1"), _spec(requested_host="h2")) == (
        "not the requested host")
    assert requested_host_filter(_host("h2"), _spec(requested_host="h2")) is None
    assert requested_host_filter(_host("h1"), _spec()) is None


def test_availability_zone_filter() -> None:
    assert availability_zone_filter(_host(zone="az1"), _spec(availability_zone="az2")) == (
        "in zone az1, not az2")
    assert availability_zone_filter(_host(zone="az2"), _spec(availability_zone="az2")) is None
    assert availability_zone_filter(_host(zone="az1"), _spec()) is None


def test_resources_filter() -> None:
    assert resources_filter(_host(), _spec()) is None
    exact = _host(vcpu=1, ram=512, disk=10)
    assert resources_filter(exact, _spec()) is None
    full = _host(used={"MEMORY_MB": 3800})
    assert resources_filter(full, _spec()) == "not enough MEMORY_MB (296 free, 512 wanted)"
    assert resources_filter(_host(disk=5), _spec()) == "not enough DISK_GB (5 free, 10 wanted)"
    no_inventory = HostState("h1", "nova", True, True, inventory={})
    assert resources_filter(no_inventory, _spec()) == "not enough VCPU (0 free, 1 wanted)"


def test_resources_filter_counts_reserved_and_allocation_ratio() -> None:
    host = HostState("h1", "nova", True, True, inventory={
        "VCPU": InventoryRecord(2, 0, 4.0), "MEMORY_MB": InventoryRecord(1024, 512),
        "DISK_GB": InventoryRecord(10)}, used={"VCPU": 7})
    assert host.free("VCPU") == 1
    assert host.free("MEMORY_MB") == 512
    assert resources_filter(host, _spec()) is None
    host.used["VCPU"] = 8
    assert resources_filter(host, _spec()) == "not enough VCPU (0 free, 1 wanted)"


def test_filter_hosts_splits_and_gives_the_first_reason() -> None:
    hosts = [_host("a", enabled=False, disk=1), _host("b", up=False), _host("c", disk=1),
             _host("d"), _host("src")]
    passed, rejected = filter_hosts(hosts, _spec(ignore_hosts=("src",)))
    assert [h.host for h in passed] == ["d"]
    assert rejected == {"a": "service disabled", "b": "service down",
                        "c": "not enough DISK_GB (1 free, 10 wanted)",
                        "src": "ignored (source host)"}
    assert len(DEFAULT_FILTERS) == 5


def test_is_up() -> None:
    now = utcnow()
    assert is_up(now, False, now, 60)
    assert is_up(now - dt.timedelta(seconds=60), False, now, 60)
    assert not is_up(now - dt.timedelta(seconds=61), False, now, 60)
    assert not is_up(now, True, now, 60)  # forced down
    assert not is_up(None, False, now, 60)  # never reported


# -- weighers ----------------------------------------------------------------------------


def _names(hosts: list[HostState]) -> list[str]:
    return [h.host for h in weigh(hosts)]


def test_most_free_ram_wins() -> None:
    assert _names([_host("a", ram=2048), _host("b", ram=8192), _host("c", ram=4096)]) == [
        "b", "c", "a"]


def test_free_means_after_usage() -> None:
    assert _names([_host("a", ram=8192, used={"MEMORY_MB": 7000}),
                   _host("b", ram=4096)]) == ["b", "a"]


def test_with_equal_ram_most_free_cpu_wins() -> None:
    assert _names([_host("a", vcpu=4), _host("b", vcpu=16)]) == ["b", "a"]


def test_with_equal_ram_and_cpu_most_free_disk_wins() -> None:
    assert _names([_host("a", disk=50), _host("b", disk=500)]) == ["b", "a"]


def test_ties_are_broken_by_name() -> None:
    assert _names([_host("c"), _host("a"), _host("b")]) == ["a", "b", "c"]


def test_weights_are_normalised_and_summed() -> None:
    """As Nova does, the weighers' normalised values add up with equal
    multipliers: being far ahead on CPU and disk outweighs a small RAM lead."""
    a = _host("a", ram=8192, vcpu=2, disk=10)
    b = _host("b", ram=8000, vcpu=32, disk=1000)
    assert _names([a, b]) == ["b", "a"]


def test_weigh_nothing_and_one_host() -> None:
    assert weigh([]) == []
    assert _names([_host("only")]) == ["only"]


# -- select_destinations on a real database ------------------------------------------------


async def _select(sessions: Sessions, spec: RequestSpec | None = None,
                  max_attempts: int = 3) -> Selection:
    async with sessions() as s, s.begin():
        return await select_destinations(s, spec or _spec(), down_after=60,
                                         max_attempts=max_attempts)


async def _allocs(sessions: Sessions, consumer: str) -> dict[str, dict[str, int]]:
    async with sessions() as s:
        return await placement.allocations_for(s, consumer)


async def test_host_states_sum_usage_per_host(sessions: Sessions) -> None:
    """Several allocations on one host are summed, a host without any is empty,
    and only compute services are hosts; disabled and down ones are marked so."""
    await add_compute(sessions, "busy", used_ram=1000)
    await add_compute(sessions, "idle")
    await add_compute(sessions, "disabled", disabled=True, used_ram=100)
    await add_compute(sessions, "forced", forced_down=True)
    await add_compute(sessions, "stale", seen_ago=300)
    await add_compute(sessions, "conductor-host", binary="ferry-conductor")
    async with sessions() as s, s.begin():
        await placement.claim(s, "vm-a", "busy", {"VCPU": 2, "MEMORY_MB": 512, "DISK_GB": 10})
        await placement.claim(s, "vm-b", "busy", {"VCPU": 3, "MEMORY_MB": 256, "DISK_GB": 0})
    async with sessions() as s:
        states = {h.host: h for h in await host_states(s, down_after=60)}
    assert set(states) == {"busy", "idle", "disabled", "forced", "stale"}
    assert states["busy"].used == {"VCPU": 5, "MEMORY_MB": 1768, "DISK_GB": 10}
    assert states["busy"].free("MEMORY_MB") == 4096 - 1768
    assert states["idle"].used == {}
    assert states["idle"].free("VCPU") == 8
    assert states["idle"].inventory == inventory()
    assert states["disabled"].used == {"MEMORY_MB": 100}
    assert [(h.host, h.enabled, h.up) for h in sorted(states.values(), key=lambda h: h.host)
            ] == [("busy", True, True), ("disabled", False, True), ("forced", True, False),
                  ("idle", True, True), ("stale", True, False)]


async def test_the_emptiest_host_is_skipped_when_disabled_or_down(sessions: Sessions) -> None:
    """The weighers would rank these first; the filters must drop them."""
    await add_compute(sessions, "disabled", ram=65536, disabled=True)
    await add_compute(sessions, "forced", ram=65536, forced_down=True)
    await add_compute(sessions, "stale", ram=65536, seen_ago=300)
    await add_compute(sessions, "small", ram=2048)
    await add_compute(sessions, "smaller", ram=1024)
    assert await _select(sessions) == Selection("small", ("smaller",))


async def test_picks_the_emptiest_host_and_claims_it(sessions: Sessions) -> None:
    await add_compute(sessions, "h1", used_ram=3000)
    await add_compute(sessions, "h2", used_ram=1000)
    await add_compute(sessions, "h3", used_ram=2000)
    sel = await _select(sessions)
    assert sel == Selection("h2", ("h3", "h1"))
    assert await _allocs(sessions, "vm1") == {"h2": SMALL}


async def test_alternates_are_at_most_max_attempts_minus_one(sessions: Sessions) -> None:
    for i, used in enumerate([100, 200, 300, 400, 500]):
        await add_compute(sessions, f"h{i}", used_ram=used)
    assert await _select(sessions, _spec(), max_attempts=3) == Selection("h0", ("h1", "h2"))
    async with sessions() as s, s.begin():
        await placement.delete_allocations(s, "vm1")
    assert await _select(sessions, _spec(), max_attempts=1) == Selection("h0", ())
    # Alternates are not claimed: only the chosen host holds the instance.
    assert await _allocs(sessions, "vm1") == {"h0": SMALL}


async def test_down_and_disabled_hosts_are_skipped(sessions: Sessions) -> None:
    await add_compute(sessions, "disabled", ram=65536, disabled=True)
    await add_compute(sessions, "forced", ram=65536, forced_down=True)
    await add_compute(sessions, "stale", ram=65536, seen_ago=300)
    await add_compute(sessions, "busy", used_ram=3000)
    await add_compute(sessions, "conductor-host", ram=65536, binary="ferry-conductor")
    sel = await _select(sessions)
    assert sel == Selection("busy", ())


async def test_source_host_is_never_the_destination(sessions: Sessions) -> None:
    await add_compute(sessions, "src", ram=65536)
    await add_compute(sessions, "dst")
    sel = await _select(sessions, _spec(ignore_hosts=("src",)))
    assert sel == Selection("dst", ())


async def test_requested_host_is_honoured(sessions: Sessions) -> None:
    await add_compute(sessions, "h1", ram=65536)
    await add_compute(sessions, "h2", used_ram=3000)
    sel = await _select(sessions, _spec(requested_host="h2"))
    assert sel == Selection("h2", ())
    assert await _allocs(sessions, "vm1") == {"h2": SMALL}


async def test_availability_zone_is_honoured(sessions: Sessions) -> None:
    await add_compute(sessions, "h1", ram=65536, zone="az1")
    await add_compute(sessions, "h2", zone="az2")
    assert (await _select(sessions, _spec(availability_zone="az2"))).host == "h2"


async def test_no_valid_host_explains_every_refusal(sessions: Sessions) -> None:
    await add_compute(sessions, "h1", disabled=True)
    await add_compute(sessions, "h2", seen_ago=300)
    await add_compute(sessions, "h3", used_ram=3900)
    await add_compute(sessions, "src")
    with pytest.raises(NoValidHost) as err:
        await _select(sessions, _spec(ignore_hosts=("src",)))
    assert err.value.reason == (
        "h1: service disabled; h2: service down; "
        "h3: not enough MEMORY_MB (196 free, 512 wanted); src: ignored (source host)")
    assert str(err.value).startswith("No valid host was found. h1: service disabled")
    assert await _allocs(sessions, "vm1") == {}


async def test_requested_host_that_cannot_take_it_is_no_valid_host(
        sessions: Sessions) -> None:
    await add_compute(sessions, "h1")
    await add_compute(sessions, "h2", seen_ago=300)
    with pytest.raises(NoValidHost, match="h1: not the requested host; h2: service down"):
        await _select(sessions, _spec(requested_host="h2"))


async def test_no_compute_hosts_at_all(sessions: Sessions) -> None:
    with pytest.raises(NoValidHost):
        await _select(sessions)


async def test_two_schedulers_racing_for_the_last_room(sessions: Sessions) -> None:
    await add_compute(sessions, "h1", used_ram=4096 - 512)
    specs = [RequestSpec(f"vm{i}", "p", "u", dict(SMALL)) for i in range(2)]
    results = await asyncio.gather(*(_select(sessions, sp) for sp in specs),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NoValidHost", "Selection"]
    async with sessions() as s:
        assert (await placement.usages(s))["h1"]["MEMORY_MB"] == 4096
