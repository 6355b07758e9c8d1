"""RabbitMQ restarted under a running cluster (issue 5): migrations in flight
end consistent, nothing is lost, and while the broker is down the API answers
503 (Nova's `serviceUnavailable`) for actions that need the bus instead of
hanging. The cluster is the one of test_netns_cluster (computes in their own
network namespaces, transfers slowed on shaped links so they are mid-way when
the broker goes).

The broker is this machine's RabbitMQ: `rabbitmqctl stop_app` / `start_app`
(the Erlang node stays up, durable queues and persistent messages survive).
Whatever happens, the `broker` fixture starts it again and waits until it
accepts AMQP connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from tests.integration.test_netns_cluster import (
    RESTING_STATES,
    SLOW_LINK,
    NetCluster,
    add_guest_data,
    api_client,
    boot,
    check_consistent,
    confirm,
    get_server,
    image_and_flavor,
    latest_migration,
    migrate,
    net_cluster,
    wait_rest,
    wait_server,
    wait_state,
    wait_until,
)
from tests.support.cluster import AMQP, Cluster
from tests.support.netns import broker_lock

pytestmark = pytest.mark.cluster

# Long enough for the transfers in flight when the broker goes to finish while it
# is down (8 MiB each on 24 Mbit/s links, at most three sharing a link).
OUTAGE_SECONDS = 12.0
SLOW_BYTES = 8 << 20
# How long an action may take to be refused while the broker is down (the bus
# gives up publishing after a few seconds; the API must not hang on it).
REFUSE_WITHIN = 20.0


def _ctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)


async def _amqp_ok() -> bool:
    try:
        conn = await aio_pika.connect(AMQP, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


def broker_accepts(timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(_amqp_ok()):
            return
        time.sleep(0.5)
    raise RuntimeError("RabbitMQ does not accept connections")


def broker_stop() -> None:
    r = _ctl("stop_app")
    assert r.returncode == 0, r.stderr
    assert not asyncio.run(_amqp_ok()), "the broker still accepts connections"


def broker_start() -> None:
    r = _ctl("start_app")
    if r.returncode != 0:  # the node itself is gone: start it again
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60)
        _ctl("await_startup", timeout=120)
        _ctl("start_app")
    broker_accepts()


def wait_fresh_heartbeats(c: Cluster, hosts: list[str], timeout: float = 60) -> None:
    """Every host has heartbeated since now (and is up): "up" alone may still be the
    last heartbeat from before the outage, about to expire."""
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def fresh() -> bool:
        r = httpx.get(f"{c.url}/compute/v2.1/os-services", timeout=10)
        seen = {s["host"]: (s["state"], s["updated_at"]) for s in r.json()["services"]}
        return all(
            seen.get(h, ("down", None))[0] == "up" and dt.datetime.fromisoformat(seen[h][1]) > since
            for h in hosts
        )

    wait_until("fresh heartbeats from every host", fresh, timeout=timeout, interval=0.3)


@pytest.fixture
def broker() -> Iterator[None]:
    """The broker is running before and after the test, whatever the test did; no
    other namespace cluster on this machine runs meanwhile (broker_lock)."""
    with broker_lock(exclusive=True):
        broker_accepts()
        try:
            yield
        finally:
            if not asyncio.run(_amqp_ok()):
                broker_start()


@pytest.fixture
def net(tmp_path: Path, broker: None) -> Iterator[NetCluster]:
    yield from net_cluster(tmp_path, lock=False)


def _states(api: httpx.Client, ids: list[str]) -> dict[str, Any]:
    out = {}
    for sid in ids:
        m = latest_migration(api, sid) or {}
        s = get_server(api, sid)
        out[sid[:8]] = (m.get("state"), s["status"], s["OS-EXT-STS:task_state"])
    return out


def test_broker_restarted_mid_migrations_nothing_lost(net: NetCluster) -> None:
    """Regression too (fixed in afba1df): a reply lost in the restart was never sent
    again (the redelivered request was acked as a duplicate without an answer), so
    the conductor waited the call's whole timeout (send_disks had 3600 s then)."""
    c = net.cluster
    with api_client(c) as api:
        image = image_and_flavor(api)
        ids = boot(api, 6, one_by_one=True, image=image)
        # One slow transfer from each host, so that all three are in flight together.
        slow: dict[str, str] = {}
        for sid in ids:
            slow.setdefault(get_server(api, sid)["OS-EXT-SRV-ATTR:host"], sid)
        for host, sid in slow.items():
            add_guest_data(net, sid, host, SLOW_BYTES)
        for n in net.lab.nodes:
            net.lab.shape(n, SLOW_LINK)
        for sid in ids:
            assert migrate(api, sid).status_code == 202
        for sid in slow.values():
            wait_state(api, sid, {"transferring"}, timeout=60)
        before = _states(api, ids)
        broker_stop()
        down_at = time.monotonic()
        try:
            # Reads need no bus: the API keeps answering them while the broker is down.
            r = api.get("/compute/v2.1/servers/detail", timeout=10)
            assert r.status_code == 200
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        finally:
            broker_start()
        print(f"broker down {time.monotonic() - down_at:.1f}s; when it went: {before}")
        # Every service reconnects: the heartbeats arrive again.
        wait_fresh_heartbeats(c, list(net.lab.nodes))
        try:
            for sid in ids:
                wait_rest(api, sid, timeout=45)
        finally:
            print("after the restart:", _states(api, ids))
        check_consistent(net, api, ids)
        for sid in ids:
            if get_server(api, sid)["status"] == "VERIFY_RESIZE":
                confirm(api, sid)
        for sid in ids:
            wait_server(api, sid, "ACTIVE")
        check_consistent(net, api, ids)


def test_services_reconnect_after_broker_restart(net: NetCluster) -> None:
    """The broker restarted while idle: API, conductors and the computes (through
    the forwarder) reconnect, heartbeats resume, and migrations work end to end."""
    c = net.cluster
    with api_client(c) as api:
        ids = boot(api, 3)
        broker_stop()
        try:
            time.sleep(3)
        finally:
            broker_start()
        restarted = time.monotonic()
        wait_fresh_heartbeats(c, list(net.lab.nodes))
        for sid in ids:
            assert migrate(api, sid).status_code == 202
        for sid in ids:
            wait_server(api, sid, "VERIFY_RESIZE", timeout=90)
            confirm(api, sid)
        for sid in ids:
            wait_server(api, sid, "ACTIVE")
        print(
            f"three migrations confirmed {time.monotonic() - restarted:.1f}s after the "
            f"broker came back"
        )
        check_consistent(net, api, ids)


def _post(
    url: str, method: str, path: str, body: dict[str, Any] | None
) -> tuple[float, int | str, Any]:
    """One request on its own connection (uvicorn closes one after a 500)."""
    started = time.monotonic()
    try:
        with httpx.Client(
            base_url=url, timeout=REFUSE_WITHIN, headers={"OpenStack-API-Version": "compute 2.80"}
        ) as api:
            r = api.request(method, path, json=body)
        try:
            payload = r.json()
        except ValueError:
            payload = r.text
        return time.monotonic() - started, r.status_code, payload
    except httpx.HTTPError as exc:
        return time.monotonic() - started, type(exc).__name__, None


def _during_outage(
    c_url: str, calls: dict[str, tuple[str, str, dict[str, Any] | None]]
) -> dict[str, tuple[float, int | str, Any]]:
    broker_stop()
    try:
        with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
            futures = {k: pool.submit(_post, c_url, *v) for k, v in calls.items()}
            results = {k: f.result() for k, f in futures.items()}
    finally:
        broker_start()
    print(
        "while the broker was down:",
        {k: (f"{t:.1f}s", code, str(body)[:120]) for k, (t, code, body) in results.items()},
    )
    return results


def _calls(ids: list[str], image: str) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    return {
        "migrate": ("POST", f"/compute/v2.1/servers/{ids[0]}/action", {"migrate": None}),
        "os-stop": ("POST", f"/compute/v2.1/servers/{ids[1]}/action", {"os-stop": None}),
        "delete": ("DELETE", f"/compute/v2.1/servers/{ids[2]}", None),
        "create": (
            "POST",
            "/compute/v2.1/servers",
            {"server": {"name": "during-outage", "imageRef": image, "flavorRef": "1"}},
        ),
    }


def test_api_answers_503_while_broker_down(net: NetCluster) -> None:
    """Regression (fixed in afba1df): create and delete answered 500."""
    with api_client(net.cluster) as api:
        image = image_and_flavor(api)
        ids = boot(api, 3, image=image)
    results = _during_outage(net.cluster.url, _calls(ids, image))
    for name, (took, code, body) in results.items():
        assert took < REFUSE_WITHIN, f"{name} hung for {took:.0f}s"
        assert code == 503, f"{name}: {code} after {took:.1f}s: {body}"
        assert isinstance(body, dict) and body["serviceUnavailable"]["code"] == 503, body


def test_refused_actions_leave_servers_usable(net: NetCluster) -> None:
    """Regression (fixed in afba1df): after a 503, stop/delete/create left the server
    in its task_state for good (nothing sent the request again or cleared it)."""
    c = net.cluster
    with api_client(c) as api:
        image = image_and_flavor(api)
        ids = boot(api, 3, image=image)
        _during_outage(c.url, _calls(ids, image))
        wait_fresh_heartbeats(c, list(net.lab.nodes))
        everyone = [s["id"] for s in api.get("/compute/v2.1/servers/detail").json()["servers"]]

        def settled() -> bool:
            for sid in everyone:
                r = api.get(f"/compute/v2.1/servers/{sid}")
                if r.status_code == 404:
                    continue  # deleted after all: fine
                s = r.json()["server"]
                m = latest_migration(api, sid)
                if s["OS-EXT-STS:task_state"] is not None or (
                    m is not None and m["state"] not in RESTING_STATES
                ):
                    return False
            return True

        try:
            wait_until("every server to leave its task state", settled, timeout=20)
        finally:
            print("20s after the broker came back:", _states(api, everyone))
