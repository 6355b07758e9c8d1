"""A real guest moved between compute hosts that live in their own network
namespaces (issue 5's deployment shape with libvirt/QEMU guests).

The three `ferry serve compute` processes run in namespaces on a bridge and
drive the machine's one libvirtd (its socket is a file, not a network
address); their domains are named per host. The guest's disk crosses the
bridge on the data plane between the two namespaces' addresses. The guest
prints `GUEST-BOOTED id=<id> boot=<n> payload=ok` with a counter on its own
disk, so the console after the move proves the copied disk booted, and
booted once more than before.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferry.compute.virt.libvirt.daemons import ensure_daemons
from ferry.image.guest import Marker, build_guest_image, last_marker
from tests.integration.test_netns_cluster import (
    FLAVOR,
    NetCluster,
    api_client,
    confirm,
    host_of,
    latest_migration,
    migrate,
    net_cluster,
    wait_rest,
    wait_server,
)

pytestmark = [pytest.mark.cluster, pytest.mark.libvirt]


@pytest.fixture
def real_net(tmp_path: Path) -> Iterator[NetCluster]:
    ensure_daemons()
    try:
        yield from net_cluster(tmp_path, {"FERRY_SHUTDOWN_TIMEOUT": "60",
                                          "FERRY_SHUTDOWN_RETRY_INTERVAL": "2"},
                               driver="libvirt")
    finally:
        _remove_domains(tmp_path / "servers")


def _remove_domains(record: Path) -> None:
    """Domains of the servers the test made: a failed test leaves them defined
    (and running) in the machine's libvirtd, which outlives the cluster."""
    if not record.exists():
        return
    for sid in record.read_text().split():
        for name in _domains(all_=True):
            if sid in name:
                for verb in ("destroy", "undefine"):
                    subprocess.run(["virsh", "-c", "qemu:///system", verb, name],
                                   capture_output=True, check=False)


def _domains(all_: bool = False) -> list[str]:
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--name",
                          *(["--all"] if all_ else [])],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.split() if line]


def _marker(api: httpx.Client, sid: str, boot: int, timeout: float = 180) -> Marker:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        r = api.post(f"/compute/v2.1/servers/{sid}/action",
                     json={"os-getConsoleOutput": {"length": 30}})
        if r.status_code == 200:
            text = r.json()["output"]
            m = last_marker(text)
            if m is not None and m.boot >= boot:
                return m
        time.sleep(0.5)
    raise AssertionError(f"no boot={boot} marker; console:\n{text}")


def test_real_guest_migrates_across_namespaces(real_net: NetCluster, tmp_path: Path) -> None:
    nc = real_net
    image = build_guest_image(tmp_path / "guest.img", "netns-guest")
    with api_client(nc.cluster) as api:
        r = api.post("/compute/v2.1/flavors",
                     json={"flavor": {"name": "tiny", "id": "1", **FLAVOR}})
        assert r.status_code == 200, r.text
        img = api.post("/image/v2/images", json={"name": "guest", "disk_format": "raw",
                                                 "container_format": "bare"}).json()
        r = api.put(f"/image/v2/images/{img['id']}/file", content=image.read_bytes())
        assert r.status_code == 204, r.text
        r = api.post("/compute/v2.1/servers", json={"server": {
            "name": "real", "imageRef": img["id"], "flavorRef": "1"}})
        assert r.status_code == 202, r.text
        sid = r.json()["server"]["id"]
        with open(tmp_path / "servers", "a") as record:
            record.write(f"{sid}\n")
        wait_server(api, sid, "ACTIVE", timeout=180)
        before = _marker(api, sid, 1)
        assert (before.guest_id, before.payload_ok) == ("netns-guest", True)
        src = host_of(api, sid)

        assert migrate(api, sid).status_code == 202
        server, mig = wait_rest(api, sid, timeout=300)
        assert server["status"] == "VERIFY_RESIZE", server.get("fault")
        dest = host_of(api, sid)
        assert dest != src
        # The disk went from the source's namespace address to the destination's.
        assert mig["dest_host"].rsplit(":", 1)[0] == nc.lab[dest].address
        # Only the qcow2 overlay travels (the base comes from the image service).
        assert 0 < int(mig["bytes_done"]) == int(mig["bytes_total"]) < image.stat().st_size
        after = _marker(api, sid, before.boot + 1)
        assert (after.guest_id, after.boot, after.payload_ok) == \
            ("netns-guest", before.boot + 1, True)
        running = _domains()
        assert any(dest in d and sid in d for d in running), running
        assert not any(src in d and sid in d for d in running), running

        confirm(api, sid)
        wait_server(api, sid, "ACTIVE")
        last = latest_migration(api, sid)
        assert last is not None and last["status"] == "confirmed"
        assert not (nc.instances(src) / f"{sid}_resize").exists()
        assert api.delete(f"/compute/v2.1/servers/{sid}").status_code == 204
        deadline = time.monotonic() + 60
        while any(sid in d for d in _domains()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(sid in d for d in _domains())
