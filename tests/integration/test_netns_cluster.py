"""Issue 5's deployment shape with real network separation: the API and two
conductors in the root namespace; three `ferry serve compute`, each in its own
network namespace with its own address on a bridge (tests/support/netns.py).
The broker and the image API are reached from the namespaces through a
forwarder on the bridge address. The fake driver's disks are real sparse files
that cross the bridge on the data plane.

Every scenario ends with `check_consistent`: each server exists once (in the
API and on disk), statuses are at rest, os-migrations statuses are final, and
the allocations of every hypervisor (microversion 2.1 vcpus_used /
memory_mb_used) are exactly what the servers and the migrations waiting for
confirmation hold.

What each scenario showed (printed with -s):
- six migrations at once: all confirmed, each disk crossed the bridge;
- the owning conductor killed (kill -9; the owner read from `migrations.owner`):
  in `checking` and in `transferring` (the copy goes on from the destination's
  journal) the other conductor resumes it to VERIFY_RESIZE, in `confirming` to
  confirmed; takeover after the 3 s lease, in 3-4 s;
- the destination's cable pulled for 8 s mid-transfer: the TCP streams stall and
  carry on ("stall"), or, when also reset, the sender reconnects and resumes
  from what the receiver verified ("reset"); either way VERIFY_RESIZE, data intact;
- a compute host killed: down within service_down_time, never scheduled again,
  a server on it cannot be moved (409).
The last two tests are regressions for bugs found by bench/scale.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ferry.compute.virt.fake import DATA_BLOCK, DATA_OFFSETS, _payload
from tests.support.cluster import AMQP, Cluster
from tests.support.netns import NetnsLab, available, broker_lock

pytestmark = pytest.mark.cluster

NODES = ["node1", "node2", "node3"]
CONDUCTORS = ["conductor1", "conductor2"]
FLAVOR = {"vcpus": 1, "ram": 128, "disk": 1}
AT_REST = {"ACTIVE", "VERIFY_RESIZE", "SHUTOFF"}
# Nova statuses at rest ("finished" = VERIFY_RESIZE). Nova shows "error" already
# while Ferry rolls back, so rest is judged by Ferry's state.
FINAL_MIGRATION = {"confirmed", "reverted", "error", "finished"}
RESTING_STATES = {"verify", "confirmed", "reverted", "error"}
# Extra guest data written into a disk before a move, so that the transfer takes
# seconds on a shaped link (the fake driver's own data is ~200 KiB).
EXTRA_OFFSET = 512 << 20
EXTRA_BYTES = 24 << 20
SLOW_LINK = "24mbit"  # ~3 MB/s: 24 MiB take ~8 s


# -- the cluster --------------------------------------------------------------------


@dataclass
class NetCluster:
    cluster: Cluster
    lab: NetnsLab
    driver: str = "fake"
    # uuid -> (bytes, sha256) of the extra data written into its disk
    extra: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        return self.cluster.db_url

    def instances(self, node: str) -> Path:
        return self.cluster.root / node / "instances"

    def start_compute(self, name: str) -> None:
        n = self.lab[name]
        amqp = urllib.parse.urlsplit(AMQP)
        bus = amqp._replace(netloc=f"{amqp.username}:{amqp.password}@{self.lab.url('amqp')}")
        self.cluster.start_compute_env(
            name,
            f"{n.address}:0",
            wrap=n.wrap,
            driver=self.driver,
            FERRY_BUS_URL=bus.geturl(),
            FERRY_IMAGE_ENDPOINT=f"http://{self.lab.url('api')}/image",
        )


def _same_netns(pid: int, netns: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino


@pytest.fixture
def net(tmp_path: Path) -> Iterator[NetCluster]:
    yield from net_cluster(tmp_path)


def net_cluster(
    tmp: Path, settings: dict[str, str] | None = None, lock: bool = True, driver: str = "fake"
) -> Iterator[NetCluster]:
    """API + 2 conductors in the root namespace, NODES in namespaces; torn down
    (processes, database, namespaces, veths, bridge, forwarder) even on failure.
    `lock`: hold the broker lock shared (test_broker_restart holds it exclusively).
    `driver`: the computes' virt driver ("libvirt": real guests, one libvirtd)."""
    why = available()
    if why:
        pytest.fail(f"network namespaces are needed here: {why}")
    if lock:
        with broker_lock(exclusive=False):
            yield from net_cluster(tmp, settings, lock=False, driver=driver)
        return
    lab = NetnsLab(list(NODES))
    c = Cluster(tmp / f"ferry-netns-{lab.tag}")
    c.settings.update(settings or {})
    nc = NetCluster(c, lab, driver=driver)
    try:
        c.root.mkdir(parents=True, exist_ok=True)
        lab.up(log_dir=c.root)
        c.start(conductors=len(CONDUCTORS))
        amqp = urllib.parse.urlsplit(AMQP)
        lab.forward(
            {
                "amqp": (amqp.hostname or "127.0.0.1", amqp.port or 5672),
                "api": ("127.0.0.1", c.api_port),
            }
        )
        for name in NODES:
            nc.start_compute(name)
        # A libvirt compute probes KVM vs TCG on its first start on a machine.
        c.wait_hosts(NODES, timeout=60 if driver == "fake" else 240)
        for name in NODES:  # the compute processes really live in their namespaces
            assert _same_netns(c.procs[name].pid, lab[name].netns)
        yield nc
    finally:
        try:
            c.stop()
        finally:
            lab.down()


# -- API helpers ------------------------------------------------------------------------


def api_client(c: Cluster, version: str = "2.80") -> httpx.Client:
    return httpx.Client(
        base_url=c.url, timeout=60, headers={"OpenStack-API-Version": f"compute {version}"}
    )


def get_server(api: httpx.Client, sid: str) -> dict[str, Any]:
    r = api.get(f"/compute/v2.1/servers/{sid}")
    assert r.status_code == 200, r.text
    return dict(r.json()["server"])


def wait_until(
    what: str, probe: Callable[[], Any], timeout: float = 90, interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")


def wait_server(
    api: httpx.Client, sid: str, statuses: set[str] | str, timeout: float = 90
) -> dict[str, Any]:
    want = {statuses} if isinstance(statuses, str) else statuses

    def probe() -> dict[str, Any] | None:
        s = get_server(api, sid)
        assert s["status"] != "ERROR" or "ERROR" in want, s.get("fault")
        return s if s["status"] in want and s["OS-EXT-STS:task_state"] is None else None

    return dict(wait_until(f"server {sid} in {sorted(want)}", probe, timeout))


def image_and_flavor(api: httpx.Client) -> str:
    if api.get("/compute/v2.1/flavors/1").status_code == 404:
        r = api.post(
            "/compute/v2.1/flavors", json={"flavor": {"name": "tiny", "id": "1", **FLAVOR}}
        )
        assert r.status_code == 200, r.text
    img = api.post(
        "/image/v2/images", json={"name": "base", "disk_format": "raw", "container_format": "bare"}
    ).json()
    assert api.put(f"/image/v2/images/{img['id']}/file", content=b"\1" * 65536).status_code == 204
    return str(img["id"])


def boot(
    api: httpx.Client, n: int, *, one_by_one: bool = False, image: str | None = None
) -> list[str]:
    """Boot n servers; one_by_one waits for each, so the weighers spread them."""
    image = image or image_and_flavor(api)
    ids = []
    for i in range(n):
        r = api.post(
            "/compute/v2.1/servers",
            json={"server": {"name": f"vm{i}", "imageRef": image, "flavorRef": "1"}},
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["server"]["id"])
        if one_by_one:
            wait_server(api, ids[-1], "ACTIVE")
    for sid in ids:
        wait_server(api, sid, "ACTIVE")
    return ids


def wait_rest(
    api: httpx.Client, sid: str, timeout: float = 120
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait until the server's latest migration is final (or waits for the user)
    and the server has no task; returns (server, migration)."""

    def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
        m = latest_migration(api, sid)
        if m is None or m["state"] not in RESTING_STATES:
            return None
        s = get_server(api, sid)
        return (
            (s, m)
            if s["status"] in AT_REST | {"ERROR"} and s["OS-EXT-STS:task_state"] is None
            else None
        )

    server, mig = wait_until(f"the migration of {sid} to come to rest", probe, timeout)
    return dict(server), dict(mig)


def host_of(api: httpx.Client, sid: str) -> str:
    return str(get_server(api, sid)["OS-EXT-SRV-ATTR:host"])


def migrate(api: httpx.Client, sid: str, host: str | None = None) -> httpx.Response:
    return api.post(
        f"/compute/v2.1/servers/{sid}/action", json={"migrate": {"host": host} if host else None}
    )


def confirm(api: httpx.Client, sid: str) -> None:
    r = api.post(f"/compute/v2.1/servers/{sid}/action", json={"confirmResize": None})
    assert r.status_code == 204, r.text


def migrations_of(api: httpx.Client, sid: str) -> list[dict[str, Any]]:
    r = api.get("/ferry/v1/migrations", params={"instance_uuid": sid})
    assert r.status_code == 200, r.text
    return list(r.json()["migrations"])  # newest first


def latest_migration(api: httpx.Client, sid: str) -> dict[str, Any] | None:
    migs = migrations_of(api, sid)
    return migs[0] if migs else None


def wait_state(
    api: httpx.Client, sid: str, states: set[str], timeout: float = 60, interval: float = 0.05
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        m = latest_migration(api, sid)
        return m if m and m["state"] in states else None

    return dict(wait_until(f"migration of {sid} in {sorted(states)}", probe, timeout, interval))


def db_fetch(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(db_url, timeout=10)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def owner(db_url: str, mig_uuid: str) -> str | None:
    rows = db_fetch(db_url, "SELECT owner FROM migrations WHERE uuid = $1", mig_uuid)
    return rows[0]["owner"] if rows else None


# -- guest data --------------------------------------------------------------------------


def add_guest_data(nc: NetCluster, sid: str, host: str, nbytes: int = EXTRA_BYTES) -> None:
    """Write incompressible data into the server's disk (as its guest would)."""
    disk = nc.instances(host) / sid / "disk"
    data = os.urandom(nbytes)
    with open(disk, "r+b") as f:
        assert os.fstat(f.fileno()).st_size >= EXTRA_OFFSET + nbytes
        os.pwrite(f.fileno(), data, EXTRA_OFFSET)
        os.fsync(f.fileno())
    nc.extra[sid] = (nbytes, hashlib.sha256(data).hexdigest())


def disk_intact(nc: NetCluster, directory: Path, sid: str) -> bool:
    disk = directory / "disk"
    if not disk.exists():
        return False
    with open(disk, "rb") as f:
        for off in DATA_OFFSETS:
            if os.pread(f.fileno(), DATA_BLOCK, off) != _payload(sid):
                return False
        if sid in nc.extra:
            nbytes, digest = nc.extra[sid]
            data = os.pread(f.fileno(), nbytes, EXTRA_OFFSET)
            if hashlib.sha256(data).hexdigest() != digest:
                return False
    return True


# -- consistency -------------------------------------------------------------------------


def check_consistent(
    nc: NetCluster, api: httpx.Client, ids: list[str], dead_hosts: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Servers exist once, at rest, their disks where the API says; migrations
    final; every hypervisor's usage exactly what servers and unconfirmed moves hold."""
    listed = [s["id"] for s in api.get("/compute/v2.1/servers/detail").json()["servers"]]
    assert sorted(listed) == sorted(set(listed)), "a server is listed twice"
    assert set(ids) <= set(listed)
    servers = {sid: get_server(api, sid) for sid in ids}
    expect: dict[str, list[int]] = {n: [0, 0] for n in NODES}
    for sid, s in servers.items():
        assert s["status"] in AT_REST and s["OS-EXT-STS:task_state"] is None, (
            sid,
            s["status"],
            s["OS-EXT-STS:task_state"],
            s.get("fault"),
        )
        host = s["OS-EXT-SRV-ATTR:host"]
        live = {n for n in NODES if (nc.instances(n) / sid).exists()}
        kept = {n for n in NODES if (nc.instances(n) / f"{sid}_resize").exists()}
        assert live == {host}, f"{sid} on {host} per the API, disks on {sorted(live)}"
        assert disk_intact(nc, nc.instances(host) / sid, sid), f"{sid}: disk damaged on {host}"
        expect[host][0] += FLAVOR["vcpus"]
        expect[host][1] += FLAVOR["ram"]
        unfinished = [
            (m["state"], m["status"])
            for m in migrations_of(api, sid)
            if m["state"] not in RESTING_STATES
        ]
        assert not unfinished, f"{sid}: migrations not at rest: {unfinished}"
        mig = latest_migration(api, sid)
        if s["status"] == "VERIFY_RESIZE":
            assert mig and mig["status"] == "finished" and mig["dest_compute"] == host
            src = mig["source_compute"]
            assert kept == {src}, f"{sid}: source copy expected on {src}, found {kept}"
            assert disk_intact(nc, nc.instances(src) / f"{sid}_resize", sid)
            expect[src][0] += FLAVOR["vcpus"]  # the migration holds the source side
            expect[src][1] += FLAVOR["ram"]
        else:
            assert not kept, f"{sid}: stale source copies on {sorted(kept)}"
    os_migs = api.get("/compute/v2.1/os-migrations").json()["migrations"]
    assert all(m["status"] in FINAL_MIGRATION for m in os_migs), [
        (m["instance_uuid"], m["status"]) for m in os_migs
    ]
    hyp = api.get(
        "/compute/v2.1/os-hypervisors/detail", headers={"OpenStack-API-Version": "compute 2.1"}
    ).json()["hypervisors"]
    used = {h["hypervisor_hostname"]: [h["vcpus_used"], h["memory_mb_used"]] for h in hyp}
    assert used == expect, f"allocations {used} != expected {expect}"
    states = {h["hypervisor_hostname"]: h["state"] for h in hyp}
    for n in NODES:
        assert states[n] == ("down" if n in dead_hosts else "up"), states
    return servers


# -- scenarios ---------------------------------------------------------------------------


def test_six_migrations_at_once_across_namespaces(net: NetCluster) -> None:
    with api_client(net.cluster) as api:
        hyp = api.get("/compute/v2.1/os-hypervisors/detail").json()["hypervisors"]
        assert {h["hypervisor_hostname"]: h["host_ip"] for h in hyp} == {
            n: net.lab[n].address for n in NODES
        }
        ids = boot(api, 6)
        before = {sid: host_of(api, sid) for sid in ids}
        for sid in ids:
            assert migrate(api, sid).status_code == 202
        for sid in ids:
            wait_server(api, sid, "VERIFY_RESIZE", timeout=120)
        check_consistent(net, api, ids)
        for sid in ids:
            m = latest_migration(api, sid)
            assert m is not None and m["source_compute"] == before[sid]
            assert m["dest_compute"] != before[sid]
            # The disk crossed the bridge to the destination namespace's address.
            assert m["dest_host"].startswith(net.lab[m["dest_compute"]].address + ":")
            assert m["bytes_done"] > 0
            confirm(api, sid)
        for sid in ids:
            wait_server(api, sid, "ACTIVE")
        servers = check_consistent(net, api, ids)
        assert all(servers[sid]["OS-EXT-SRV-ATTR:host"] != before[sid] for sid in ids)
        migs = api.get("/compute/v2.1/os-migrations").json()["migrations"]
        assert sorted(m["status"] for m in migs) == ["confirmed"] * 6


def _pair(api: httpx.Client, sid: str) -> tuple[str, str]:
    src = host_of(api, sid)
    return src, next(n for n in NODES if n != src)


def _wait_owner(
    db_url: str, mig_uuid: str, pred: Callable[[str | None], bool], timeout: float = 30
) -> str | None:
    box: list[str | None] = []

    def probe() -> bool:
        box[:] = [owner(db_url, mig_uuid)]
        return pred(box[0])

    wait_until(f"owner of {mig_uuid}", probe, timeout, interval=0.1)
    return box[0]


# Which state the owning conductor is killed in, and what the survivor must do
# (ferry/conductor/states.py ON_RESTART): resume (checking, confirming) or roll
# back. A transfer resumes too: the migration keeps its grant and the
# destination its partial files and journal, so the copy goes on from there.
KILL_CASES = {
    "checking": "resume",
    "transferring": "resume",
    "confirming": "resume",
}


@pytest.mark.parametrize("state", list(KILL_CASES))
def test_owner_conductor_killed_the_other_takes_over(net: NetCluster, state: str) -> None:
    c = net.cluster
    with api_client(c) as api:
        [sid] = boot(api, 1)
        src, dest = _pair(api, sid)
        frozen: str | None = None
        if state == "checking":
            # The destination does not answer its pre-flight while frozen.
            frozen = dest
            c.send_signal(dest, signal.SIGSTOP)
        elif state == "transferring":
            add_guest_data(net, sid, src)
            for n in (src, dest):
                net.lab.shape(n, SLOW_LINK)
        try:
            if state == "confirming":
                assert migrate(api, sid, dest).status_code == 202
                wait_server(api, sid, "VERIFY_RESIZE")
                frozen = src  # the source does not answer confirm_migration while frozen
                c.send_signal(src, signal.SIGSTOP)
                confirm(api, sid)
            else:
                assert migrate(api, sid, dest).status_code == 202
            mig = wait_state(api, sid, {state})
            first = _wait_owner(c.db_url, mig["uuid"], lambda o: o is not None, timeout=10)
            assert first in CONDUCTORS
            c.kill(first, signal.SIGKILL)
            killed_at = time.monotonic()
            survivor = next(x for x in CONDUCTORS if x != first)

            def taken_over() -> bool:
                # The survivor holds the lease, or has already moved the migration on.
                m = latest_migration(api, sid)
                return owner(c.db_url, mig["uuid"]) == survivor or (
                    m is not None and m["state"] != state
                )

            wait_until(f"{survivor} to take over", taken_over, timeout=30, interval=0.1)
            takeover_s = time.monotonic() - killed_at
            if frozen:
                c.send_signal(frozen, signal.SIGCONT)
                frozen = None
        finally:
            if frozen:
                c.send_signal(frozen, signal.SIGCONT)
        final, m = wait_rest(api, sid)
        print(
            f"killed {first} in {state}: {survivor} took over in {takeover_s:.1f}s; "
            f"migration {m['state']}/{m['status']}, server "
            f"{final['status']} on {final['OS-EXT-SRV-ATTR:host']}"
        )
        if state in ("checking", "transferring"):
            assert (final["status"], m["status"]) == ("VERIFY_RESIZE", "finished"), m
            assert final["OS-EXT-SRV-ATTR:host"] == dest
            check_consistent(net, api, [sid])
            confirm(api, sid)
            final = wait_server(api, sid, "ACTIVE")
        else:
            assert (final["status"], m["status"]) == ("ACTIVE", "confirmed")
            assert final["OS-EXT-SRV-ATTR:host"] == dest
        check_consistent(net, api, [sid])
        # The survivor keeps working: another full move goes through.
        _, there = _pair(api, sid)
        assert migrate(api, sid, there).status_code == 202
        wait_server(api, sid, "VERIFY_RESIZE")
        confirm(api, sid)
        wait_server(api, sid, "ACTIVE")
        check_consistent(net, api, [sid])


CUT_SECONDS = 8.0


@pytest.mark.parametrize("fault", ["stall", "reset"])
def test_destination_link_cut_during_transfer(net: NetCluster, fault: str) -> None:
    """The destination's cable is pulled for CUT_SECONDS mid-transfer. "stall": the
    TCP streams just wait; "reset": they are also aborted on both ends (ss -K), so
    the sender has to reconnect and resume from what the receiver verified."""
    c = net.cluster
    with api_client(c) as api:
        [sid] = boot(api, 1)
        src, dest = _pair(api, sid)
        add_guest_data(net, sid, src)
        for n in (src, dest):
            net.lab.shape(n, SLOW_LINK)
        assert migrate(api, sid, dest).status_code == 202
        wait_state(api, sid, {"transferring"})
        # Data is flowing (progress reports arrive about every second).
        wait_until(
            "transfer progress",
            lambda: (
                (latest_migration(api, sid) or {}).get("bytes_done", 0) > 0
                or latest_migration(api, sid)["state"] != "transferring"
            ),
            timeout=20,
            interval=0.1,
        )
        m = latest_migration(api, sid)
        assert m is not None and m["state"] == "transferring", "the transfer ended too early"
        dest_ip, dest_port = m["dest_host"].rsplit(":", 1)
        assert net.lab.reachable(src, dest_ip, int(dest_port))
        with net.lab.link_cut(dest):
            assert not net.lab.reachable(src, dest_ip, int(dest_port), timeout=1)
            if fault == "reset":
                aborted = net.lab.reset_connections(
                    src, int(dest_port)
                ) + net.lab.reset_connections(dest, int(dest_port))
                assert f":{dest_port}" in aborted, aborted  # ss lists what it aborted
            time.sleep(CUT_SECONDS)
            during = latest_migration(api, sid)
            # The guest is off and its source copy untouched while the link is down.
            assert disk_intact(net, net.instances(src) / f"{sid}_resize", sid)
        final, m = wait_rest(api, sid, timeout=150)
        notes = [s.get("note", "") for s in m["steps"] if s.get("note")]
        retries = [
            line
            for line in (c.root / f"{src}.log").read_text().splitlines()
            if "resuming in" in line
        ]
        print(
            f"{fault}: link of {dest} cut for {CUT_SECONDS:.0f}s in "
            f"{during and during['state']} at {during and during['bytes_done']} bytes: "
            f"migration ended {m['state']}/{m['status']}; server {final['status']} on "
            f"{final['OS-EXT-SRV-ATTR:host']}; steps: {notes}; sender retries: {retries}"
        )
        check_consistent(net, api, [sid])
        if final["status"] == "VERIFY_RESIZE":  # resumed: the copy on dest is verified
            assert final["OS-EXT-SRV-ATTR:host"] == dest
            if fault == "reset":
                assert retries, "the sender never reconnected, yet the copy arrived?"
            confirm(api, sid)
            final = wait_server(api, sid, "ACTIVE")
            assert final["OS-EXT-SRV-ATTR:host"] == dest
        else:  # rolled back: the source copy runs again
            assert final["OS-EXT-SRV-ATTR:host"] == src and m["status"] == "error"
        check_consistent(net, api, [sid])


def test_killed_compute_reported_down_never_picked_and_pinned(net: NetCluster) -> None:
    c = net.cluster
    down_time = float(c.settings["FERRY_SERVICE_DOWN_TIME"])
    report = float(c.settings["FERRY_REPORT_INTERVAL"])
    with api_client(c) as api:
        image = image_and_flavor(api)
        ids = boot(api, 3, one_by_one=True, image=image)
        victim = host_of(api, ids[0])
        c.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        c.wait_hosts([victim], state="down", timeout=down_time + 4 * report + 10)
        detected = time.monotonic() - killed
        print(
            f"{victim} killed: reported down after {detected:.1f}s "
            f"(service_down_time {down_time:.0f}s, report_interval {report:.0f}s)"
        )
        assert detected <= down_time + 2 * report + 3
        others = [n for n in NODES if n != victim]
        hyp = api.get("/compute/v2.1/os-hypervisors").json()["hypervisors"]
        assert {h["hypervisor_hostname"]: h["state"] for h in hyp}[victim] == "down"

        # Moving a server off a down host: 409, and nothing changes (Nova).
        pinned = [sid for sid in ids if host_of(api, sid) == victim]
        for sid in pinned:
            r = migrate(api, sid)
            assert r.status_code == 409, r.text
            assert "conflictingRequest" in r.json(), r.json()
            s = get_server(api, sid)
            assert (s["status"], s["OS-EXT-STS:task_state"]) == ("ACTIVE", None)
            assert migrations_of(api, sid) == []

        # The scheduler never picks the down host: neither for moves...
        movable = [sid for sid in ids if sid not in pinned]
        for sid in movable:
            assert migrate(api, sid).status_code == 202
        for sid in movable:
            wait_server(api, sid, "VERIFY_RESIZE")
            m = latest_migration(api, sid)
            assert m is not None and m["dest_compute"] in others
            confirm(api, sid)
        # ...nor for new servers...
        new = boot(api, 4, image=image)
        assert all(host_of(api, sid) in others for sid in new)
        # ...nor when it is asked for by name (2.56): no valid host, server unharmed.
        sid = movable[0]
        wait_server(api, sid, "ACTIVE")
        home = host_of(api, sid)
        r = migrate(api, sid, victim)
        print(f"migrate to the down host by name: {r.status_code} {r.text[:200]}")
        assert r.status_code in (202, 400, 409)
        s, _ = wait_rest(api, sid)
        assert s["OS-EXT-SRV-ATTR:host"] == home
        m = latest_migration(api, sid)
        assert m is not None and m["status"] in ("error", "confirmed")
        check_consistent(net, api, ids + new, dead_hosts=(victim,))


# -- regressions for what bench/scale found -------------------------------------------------


async def test_transfer_from_a_process_with_many_open_files(tmp_path: Path) -> None:
    """Regression (found by bench/scale, fixed in afba1df): the sender polled its
    sockets with select(), which refuses descriptors >= 1024, so a compute process
    with ~1,000 open files could not send a disk."""
    import resource

    from ferry.transfer import TokenRegistry, TransferGrant, TransferServer, new_token, send_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    # A busy compute host: guests' files, AMQP, libvirt... push new sockets past 1023.
    fillers = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    registry = TokenRegistry()
    server = TransferServer("127.0.0.1", 0, registry)
    try:
        await server.start()
        src, dst = tmp_path / "src", tmp_path / "dst" / "uuid"
        src.mkdir()
        data = os.urandom(8 << 20)
        (src / "disk").write_bytes(data)
        token = new_token()
        registry.expect(TransferGrant(token, "mig-fds", dst, {"disk": len(data)}, time.time() + 60))
        await send_files(server.address, token, "mig-fds", src, ["disk"], attempts=1)
        assert (dst / "disk").read_bytes() == data
    finally:
        await server.stop()
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_lease_renewal_spares_a_migration_still_taking_its_lease() -> None:
    """Regression (found by bench/scale, fixed in afba1df): lease renewal cancelled
    migrations whose runner was still waiting to take the lease (~1,500 such
    cancellations with 500 migrations at once)."""
    from ferry.bus.memory import MemoryBus
    from ferry.conductor.manager import ConductorEndpoint
    from ferry.conf import Settings
    from ferry.db.session import make_engine, make_sessionmaker
    from tests.support.postgres import create_database, drop_database

    url = await asyncio.to_thread(create_database)
    engine = make_engine(url)
    try:
        cond = ConductorEndpoint.create(
            make_sessionmaker(engine), MemoryBus(), Settings(), name="conductor-a"
        )
        gate = asyncio.Event()
        ran: list[str] = []

        async def slow_acquire(migration_uuid: str) -> bool:
            await gate.wait()  # e.g. every database connection is busy
            return True

        async def run(migration_uuid: str) -> None:
            ran.append(migration_uuid)

        async def release(migration_uuid: str) -> None:
            return None

        cond.leases.acquire = slow_acquire  # type: ignore[method-assign]
        cond.leases.release = release  # type: ignore[method-assign]
        cond.runner.run = run  # type: ignore[method-assign]
        cond.runner.start("mig-1")
        await asyncio.sleep(0.05)
        await cond.renew_leases()  # the periodic job comes round meanwhile
        gate.set()
        await cond.runner.wait_idle()
        assert ran == ["mig-1"], "the migration was cancelled before it took its lease"
    finally:
        await engine.dispose()
        await asyncio.to_thread(drop_database, url)
