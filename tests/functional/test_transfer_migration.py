"""The disk transfer inside a migration: bandwidth caps, progress on the record,
and the faults a transfer meets (destination disk full, a connection cut, the
destination agent dying and coming back or not), each checked with the
invariants afterwards. FakeDriver disks are sparse with a few data blocks;
`_add_data` gives them more, in many segments, so a transfer takes long enough
to be interrupted and a resend would show in the byte count."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ferry.cmd.embedded import EmbeddedCloud
from ferry.conductor.manager import ConductorEndpoint
from ferry.db.models import InstanceFault
from ferry.transfer import allocated_bytes
from tests.support import invariants
from tests.support.cloud import Cloud, start_cloud

BLOCK = 64 * 1024
SEGMENT = 4 * 1024 * 1024  # the data plane's default chunk: one segment per block below


def _allocated(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return allocated_bytes(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _data_digest(path: Path, blocks: int) -> str:
    """Digest of the blocks `_add_data` wrote (the guest's boot counter changes
    at every boot, so the whole file's digest would not survive a restart)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for i in range(blocks):
            f.seek((100 + i) * SEGMENT)
            h.update(f.read(BLOCK))
    return h.hexdigest()


def _add_data(path: Path, blocks: int) -> None:
    """Random (incompressible, non-zero) 64 KiB blocks, one per 4 MiB segment, from
    400 MiB on: clear of the fake guest's own data (1, 64 and 300 MiB)."""
    with open(path, "r+b") as f:
        for i in range(blocks):
            f.seek((100 + i) * SEGMENT)
            f.write(os.urandom(BLOCK))
        f.flush()
        os.fsync(f.fileno())


async def _cloud(tmp: Path, **settings: Any) -> AsyncIterator[Cloud]:
    ec = await start_cloud(tmp / "state", **settings)
    async with httpx.AsyncClient(base_url=ec.url, timeout=30) as client:
        yield Cloud(ec, client)
    await ec.stop()


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Cloud]:
    """A cloud that gives up on an unreachable destination quickly."""
    async for c in _cloud(tmp_path, transfer_give_up_s=1.5, rollback_dest_timeout=1.0):
        yield c


@pytest.fixture
async def polled(tmp_path: Path) -> AsyncIterator[Cloud]:
    """A cloud whose conductor asks after a running send every 0.2 s."""
    async for c in _cloud(tmp_path, transfer_poll_s=0.2):
        yield c


async def _boot(cloud: Cloud, blocks: int = 0) -> tuple[str, str, str, Path]:
    server = await cloud.boot()
    sid, src = server["id"], server["OS-EXT-SRV-ATTR:host"]
    dest = next(c.host for c in cloud.cloud.computes if c.host != src)
    disk = cloud.cloud.compute(src).store.path(sid) / "disk"
    if blocks:
        _add_data(disk, blocks)
    return sid, src, dest, disk


async def _migrate(cloud: Cloud, sid: str, body: dict[str, Any] | None = None,
                   version: str | None = None) -> httpx.Response:
    return await cloud.action(sid, {"migrate": body}, version=version)


async def _ferry_mig(cloud: Cloud, sid: str) -> dict[str, Any]:
    [mig] = await cloud.migrations(sid)
    return mig


async def _until(check: Any, timeout: float = 10, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")


async def _transferring_with_bytes(cloud: Cloud, sid: str, fraction: float) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        migs = await cloud.migrations(sid)
        m = migs[0] if migs else None
        if m and m["state"] == "transferring" and m["bytes_total"] \
                and m["bytes_done"] >= fraction * m["bytes_total"]:
            return m
        return None

    found: dict[str, Any] = await _until(check)
    return found


async def _migrate_until(cloud: Cloud, sid: str, rate: int, fraction: float) -> None:
    """Migrate capped at `rate` bytes/s and return once `fraction` of it moved."""
    r = await _migrate(cloud, sid, {"ferry:max_bandwidth": rate}, version="2.56")
    assert r.status_code == 202, r.text
    await _transferring_with_bytes(cloud, sid, fraction)


def _sent(mig: dict[str, Any]) -> int:
    """Payload bytes the source put on the wire in all attempts (the step's note)."""
    note = next(st["note"] for st in mig["steps"] if st["event"] == "transferred")
    match = re.match(r"(\d+) bytes sent", note)
    assert match, note
    return int(match.group(1))


def _step_seconds(mig: dict[str, Any], state: str) -> float:
    steps = mig["steps"]
    i = next(i for i, st in enumerate(steps) if st["state"] == state)
    t0 = time.strptime(steps[i]["at"][:19], "%Y-%m-%dT%H:%M:%S")
    t1 = time.strptime(steps[i + 1]["at"][:19], "%Y-%m-%dT%H:%M:%S")
    frac0 = float("0" + steps[i]["at"][19:].rstrip("Z"))
    frac1 = float("0" + steps[i + 1]["at"][19:].rstrip("Z"))
    return time.mktime(t1) + frac1 - time.mktime(t0) - frac0


def _cut_connections(ec: EmbeddedCloud, host: str) -> None:
    """Cut every data connection the host receives on, as a network reset would."""
    server = ec.compute(host).transfer
    with server._lock:  # the endpoint keeps no public list of its sockets
        socks = list(server._threads.values())
    assert socks
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _host_index(name: str) -> int:
    return int(name.removeprefix("host"))


# -- bandwidth and progress -----------------------------------------------------------


async def test_bandwidth_cap_is_honoured_and_progress_is_recorded(quick: Cloud) -> None:
    """Also: a transfer that keeps moving outlasts the give-up time (1.5 s here)."""
    cloud = quick
    sid, *_ = await _boot(cloud, blocks=4)
    limit = 200_000  # bytes/s: ~0.5 MB of data takes ~2.5 s
    r = await _migrate(cloud, sid, {"ferry:max_bandwidth": limit}, version="2.56")
    assert r.status_code == 202, r.text

    samples: list[dict[str, Any]] = []
    percents: list[int] = []
    while True:
        m = await _ferry_mig(cloud, sid)
        if m["state"] not in ("scheduling", "checking", "powering_off", "transferring"):
            break
        if m["state"] == "transferring" and m["progress_at"]:
            samples.append(m)
            s = await cloud.server(sid)
            assert s["status"] == "RESIZE"
            percents.append(s["progress"])
        await asyncio.sleep(0.1)
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    mig = await _ferry_mig(cloud, sid)

    assert mig["max_bandwidth"] == limit
    # The cap holds: N bytes at L bytes/s take at least N/L (less a margin for the
    # token bucket's burst and clock granularity).
    seconds, sent = _step_seconds(mig, "transferring"), _sent(mig)
    assert sent > 400_000, sent
    assert seconds >= sent / limit * 0.8, (seconds, sent)
    assert seconds > cloud.cloud.cfg.settings.transfer_give_up_s
    # Progress: bytes, rate and ETA moved on the record at least once a second.
    moving = [m for m in samples if 0 < m["bytes_done"] < m["bytes_total"]]
    assert moving, samples
    assert all(m["rate"] and m["rate"] > 0 and m["eta"] is not None for m in moving)
    assert all(0.2 * limit < m["rate"] < 2.0 * limit for m in moving[1:]), \
        [m["rate"] for m in moving]
    stamps = sorted({m["progress_at"] for m in samples})
    times = [time.mktime(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + t[19:])
             for t in stamps]
    assert len(times) >= 3 and max(b - a for a, b in itertools.pairwise(times)) <= 1.2
    assert [m["bytes_done"] for m in samples] == sorted(m["bytes_done"] for m in samples)
    assert moving[0]["files"]["disk"]["total"] == moving[0]["bytes_total"]
    assert any(0 < p < 100 for p in percents), percents
    assert mig["bytes_done"] == mig["bytes_total"] and mig["eta"] == 0
    # Nova's view keeps Nova's keys only.
    r = await cloud.api.get("/compute/v2.1/os-migrations",
                            headers={"OpenStack-API-Version": "compute 2.80"})
    [nova] = [m for m in r.json()["migrations"] if m["instance_uuid"] == sid]
    assert not {"rate", "eta", "bytes_done", "max_bandwidth", "phase"} & set(nova)
    assert (await cloud.action(sid, {"confirmResize": None})).status_code == 204
    await cloud.wait_status(sid, "ACTIVE")
    await invariants.check(cloud.cloud, sid)


@pytest.mark.parametrize("value", [-1, 0, "50M", 1.5, True, None, [1], 2**60],
                         ids=["negative", "zero", "string", "float", "bool", "null", "list",
                              "huge"])
@pytest.mark.parametrize("version", [None, "2.56"], ids=["v2.1", "v2.56"])
async def test_bad_bandwidth_is_refused_and_changes_nothing(cloud: Cloud, value: Any,
                                                            version: str | None) -> None:
    server = await cloud.boot()
    sid = server["id"]
    r = await _migrate(cloud, sid, {"ferry:max_bandwidth": value}, version=version)
    assert r.status_code == 400, r.text
    assert "ferry:max_bandwidth" in r.json()["badRequest"]["message"]
    assert r.json()["badRequest"]["code"] == 400
    after = await cloud.server(sid)
    assert after["status"] == "ACTIVE" and after["OS-EXT-STS:task_state"] is None
    assert after["OS-EXT-SRV-ATTR:host"] == server["OS-EXT-SRV-ATTR:host"]
    assert await cloud.migrations(sid) == []
    r = await cloud.api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions")
    assert [a["action"] for a in r.json()["instanceActions"]] == ["create"]


async def test_other_unknown_keys_are_still_refused_as_nova_does(cloud: Cloud) -> None:
    server = await cloud.boot()
    sid = server["id"]
    for body in ({"max_bandwidth": 1000}, {"ferry:nope": 1}):
        r = await _migrate(cloud, sid, body, version="2.56")
        assert r.status_code == 400 and "Additional properties" in r.text, r.text
    assert await cloud.migrations(sid) == []
    # A resize takes the same key.
    r = await cloud.action(sid, {"resize": {"flavorRef": "2", "ferry:max_bandwidth": 0}})
    assert r.status_code == 400
    r = await cloud.action(sid, {"resize": {"flavorRef": "2",
                                            "ferry:max_bandwidth": 10**9}})
    assert r.status_code == 202, r.text
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    assert (await _ferry_mig(cloud, sid))["max_bandwidth"] == 10**9


# -- faults ------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Any:
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.rmdir()


def _fill(directory: Path) -> int:
    """Write into `directory` until its filesystem is full; returns the bytes written."""
    written = 0
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            written += os.write(fd, b"\xff" * BLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return written


async def test_destination_disk_full_fails_cleanly(cloud: Cloud) -> None:
    """The destination's instance directory is a 4 MiB tmpfs; the transfer starts
    (it fits when it begins), then the filesystem fills up under it, so a write
    fails with a real ENOSPC."""
    sid, src, dest, disk = await _boot(cloud, blocks=40)  # ~2.7 MB allocated
    before = _data_digest(disk, 40)
    target = cloud.cloud.compute(dest).store.path(sid)
    with _tmpfs(target, "4m"):
        r = await _migrate(cloud, sid, {"ferry:max_bandwidth": 2_000_000}, version="2.56")
        assert r.status_code == 202

        async def receiving() -> bool:
            return (target / "disk.part").exists()

        await _until(receiving)
        assert await asyncio.to_thread(_fill, target) > 0
        await cloud.settle()
        s = await cloud.wait_status(sid, "ACTIVE")
        mig = await _ferry_mig(cloud, sid)
        assert mig["status"] == "error" and mig["state"] == "error"
        assert "No space left on device" in mig["error"], mig["error"]
        async with cloud.cloud.sessions() as db:
            faults = (await db.execute(select(InstanceFault.message).where(
                InstanceFault.instance_uuid == sid))).scalars().all()
        assert any("No space left on device" in f for f in faults), faults
        # The partial files are gone from the destination (and the grant with them).
        assert not [p for p in os.listdir(target) if p.startswith("disk")], os.listdir(target)
        assert not cloud.cloud.compute(dest).tokens.pending()
    assert s["OS-EXT-SRV-ATTR:host"] == src
    assert _data_digest(cloud.cloud.compute(src).store.path(sid) / "disk", 40) == before
    await invariants.check(cloud.cloud, sid)
    await invariants.total_usage_matches(cloud.cloud)


async def test_connection_cut_mid_stream_resumes(cloud: Cloud) -> None:
    sid, _, dest, disk = await _boot(cloud, blocks=80)
    before = _data_digest(disk, 80)
    allocated = _allocated(disk)
    await _migrate_until(cloud, sid, 4_000_000, 0.2)
    _cut_connections(cloud.cloud, dest)
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=20)
    mig = await _ferry_mig(cloud, sid)
    note = next(st["note"] for st in mig["steps"] if st["event"] == "transferred")
    assert "attempts" in note and "resumed" in note, note
    assert _sent(mig) <= 1.1 * allocated, (_sent(mig), allocated)
    assert _data_digest(cloud.cloud.compute(dest).store.path(sid) / "disk", 80) == before
    await invariants.check(cloud.cloud, sid)


async def test_destination_agent_restarted_mid_stream_resumes(cloud: Cloud) -> None:
    ec: EmbeddedCloud = cloud.cloud
    sid, _, dest, disk = await _boot(cloud, blocks=80)  # ~5.4 MB allocated
    before = _data_digest(disk, 80)
    allocated = _allocated(disk)
    await _migrate_until(cloud, sid, 4_000_000, 0.25)
    port = await ec.stop_host(dest)
    grants = ec.host_state_dir(_host_index(dest)) / "transfer-grants.json"
    assert grants.exists()
    await asyncio.sleep(0.5)
    await ec.add_host(_host_index(dest), data_port=port)
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=20)
    mig = await _ferry_mig(cloud, sid)
    # Resumed from the journal: what was verified before the restart was not resent.
    assert _sent(mig) <= 1.1 * allocated, (_sent(mig), allocated)
    note = next(st["note"] for st in mig["steps"] if st["event"] == "transferred")
    assert "resumed" in note, note
    assert _data_digest(ec.compute(dest).store.path(sid) / "disk", 80) == before
    assert (await cloud.action(sid, {"confirmResize": None})).status_code == 204
    s = await cloud.wait_status(sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == dest
    await invariants.check(ec, sid)
    await invariants.total_usage_matches(ec)


async def test_destination_agent_gone_past_give_up_rolls_back(quick: Cloud) -> None:
    cloud, ec = quick, quick.cloud
    sid, src, dest, disk = await _boot(cloud, blocks=80)
    before = _data_digest(disk, 80)
    await _migrate_until(cloud, sid, 4_000_000, 0.2)
    partial = ec.compute(dest).store.path(sid)
    port = await ec.stop_host(dest)
    assert (partial / "disk.part").exists()  # kept for a resume that will not come

    s = await cloud.wait_status(sid, "ACTIVE", timeout=20)
    assert s["OS-EXT-SRV-ATTR:host"] == src
    mig = await _ferry_mig(cloud, sid)
    assert mig["status"] == "error" and "transfer to" in mig["error"], mig["error"]
    assert "queued for when it is back" in mig["steps"][-1].get("note", ""), mig["steps"][-1]
    assert _data_digest(ec.compute(src).store.path(sid) / "disk", 80) == before
    assert "payload=ok" in (await cloud.console(sid)).splitlines()[-1]

    # The destination returns: its queued clean-up drops the grant and the partials.
    await ec.add_host(_host_index(dest), data_port=port)

    async def cleaned() -> bool:
        return not partial.exists()

    await _until(cleaned)
    assert not ec.compute(dest).tokens.pending()
    await invariants.check(ec, sid)
    await invariants.total_usage_matches(ec)
    # And the server can move again, to the same destination.
    assert (await _migrate(cloud, sid)).status_code == 202
    await cloud.wait_status(sid, "VERIFY_RESIZE")
    await invariants.check(ec, sid)


async def test_conductor_restart_mid_stream_reuses_the_grant(cloud: Cloud) -> None:
    """TRANSFERRING resumes on a conductor restart: the new conductor presents the
    token kept on the migration row, the destination keeps that one grant, and
    the source (still sending for the old conductor) answers once for both."""
    ec = cloud.cloud
    sid, _, dest, disk = await _boot(cloud, blocks=80)
    allocated = _allocated(disk)
    await _migrate_until(cloud, sid, 4_000_000, 0.2)
    old = ec.conductor
    await old.stop()
    new = ConductorEndpoint.create(ec.sessions, ec.bus, ec.cfg.settings)
    ec.conductor = new
    await new.start()
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=20)
    mig = await _ferry_mig(cloud, sid)
    assert not any(st["event"] == "fail" for st in mig["steps"]), mig["steps"]
    assert _sent(mig) <= 1.1 * allocated, (_sent(mig), allocated)
    grants = json.loads((ec.host_state_dir(_host_index(dest)) / "transfer-grants.json")
                        .read_text())["grants"]
    mine = [g for g in grants if g["migration_uuid"] == mig["uuid"]]
    assert len(mine) == 1 and mine[0]["used"], mine
    await invariants.check(ec, sid)


async def test_no_rpc_holds_a_transfer_asks_are_repeated_until_done(polled: Cloud) -> None:
    """A send that lasts many times `transfer_poll_s`: every send_disks ask answers
    within the poll ("running"), the conductor asks again, the one send goes on
    across the asks (nothing resent) and the migration completes. So a transfer
    of hours needs no RPC timeout of hours, nor a broker delivery held that long."""
    cloud, ec = polled, polled.cloud
    sid, src, dest, disk = await _boot(cloud, blocks=80)  # ~5.4 MB at 2 MB/s: ~2.7 s
    before, allocated = _data_digest(disk, 80), _allocated(disk)
    mgr = ec.compute(src)
    asks: list[tuple[float, str]] = []
    ask = mgr.send_disks

    async def timed(**kw: Any) -> dict[str, Any]:
        t = time.monotonic()
        out = await ask(**kw)
        asks.append((time.monotonic() - t, out["state"]))
        return out

    mgr.send_disks = timed  # type: ignore[method-assign]
    r = await _migrate(cloud, sid, {"ferry:max_bandwidth": 2_000_000}, version="2.56")
    assert r.status_code == 202
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=30)
    mig = await _ferry_mig(cloud, sid)
    assert _step_seconds(mig, "transferring") > 2.0
    assert [s for _, s in asks].count("running") >= 4 and asks[-1][1] == "done", asks
    # Each ask answers within its wait (0.2 s) and some scheduling slack, far
    # below the transfer's own length.
    assert max(t for t, _ in asks) < 1.0, asks
    assert _sent(mig) <= 1.02 * allocated, (_sent(mig), allocated)
    assert _data_digest(ec.compute(dest).store.path(sid) / "disk", 80) == before
    await invariants.check(ec, sid)


async def test_source_agent_restarted_mid_stream_resumes(cloud: Cloud) -> None:
    """The source's agent stops mid-send (its send is interrupted) and comes back:
    the conductor asks again, the new agent resumes from the destination's
    journal, and the migration completes without resending what was verified."""
    ec: EmbeddedCloud = cloud.cloud
    sid, src, dest, disk = await _boot(cloud, blocks=80)
    before, allocated = _data_digest(disk, 80), _allocated(disk)
    await _migrate_until(cloud, sid, 4_000_000, 0.3)
    port = await ec.stop_host(src)
    await asyncio.sleep(0.5)
    await ec.add_host(_host_index(src), data_port=port)
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=30)
    mig = await _ferry_mig(cloud, sid)
    assert not any(st["event"] == "fail" for st in mig["steps"]), mig["steps"]
    note = next(st["note"] for st in mig["steps"] if st["event"] == "transferred")
    assert "resumed" in note, note
    assert _sent(mig) <= 1.1 * allocated, (_sent(mig), allocated)
    assert _data_digest(ec.compute(dest).store.path(sid) / "disk", 80) == before
    assert (await cloud.action(sid, {"confirmResize": None})).status_code == 204
    await cloud.wait_status(sid, "ACTIVE")
    await invariants.check(ec, sid)
    await invariants.total_usage_matches(ec)


async def test_a_send_whose_answer_is_lost_is_found_complete_on_the_destination(
        polled: Cloud) -> None:
    """The send finishes, but the source answers an error (its agent restarted
    and lost the result; the next send's token is refused as used): before
    rolling back, the conductor asks the destination, which holds every file
    verified, and the migration goes on."""
    cloud, ec = polled, polled.cloud
    sid, src, dest, disk = await _boot(cloud, blocks=20)
    before = _data_digest(disk, 20)
    mgr = ec.compute(src)
    ask = mgr.send_disks

    async def lost(**kw: Any) -> dict[str, Any]:
        out = await ask(**kw)
        if out["state"] == "done":
            raise RuntimeError("the agent restarted: the transfer token was refused as used")
        return out

    mgr.send_disks = lost  # type: ignore[method-assign]
    assert (await _migrate(cloud, sid)).status_code == 202
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=30)
    mig = await _ferry_mig(cloud, sid)
    note = next(st["note"] for st in mig["steps"] if st["event"] == "transferred")
    assert note == "disks already verified on the destination", mig["steps"]
    assert _data_digest(ec.compute(dest).store.path(sid) / "disk", 20) == before
    await invariants.check(ec, sid)


@pytest.fixture
async def short_grants(tmp_path: Path) -> AsyncIterator[Cloud]:
    """Grants that expire after 1 s unless renewed; asks every 0.2 s."""
    async for c in _cloud(tmp_path, transfer_poll_s=0.2, transfer_token_ttl=1.0):
        yield c


async def test_a_transfer_outliving_its_grant_can_still_reconnect(short_grants: Cloud) -> None:
    """The conductor renews the destination's grant with every ask, so a cut
    connection long after the grant's first lifetime (1 s here) reconnects and
    resumes instead of being refused as expired."""
    cloud, ec = short_grants, short_grants.cloud
    sid, _, dest, disk = await _boot(cloud, blocks=80)
    before = _data_digest(disk, 80)
    await _migrate_until(cloud, sid, 2_000_000, 0.1)
    await asyncio.sleep(1.5)  # past the grant's first expiry
    _cut_connections(ec, dest)
    await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=30)
    mig = await _ferry_mig(cloud, sid)
    note = next(st["note"] for st in mig["steps"] if st["event"] == "transferred")
    assert "attempts" in note and "resumed" in note, note
    assert _data_digest(ec.compute(dest).store.path(sid) / "disk", 80) == before
