"""Cold migration of a real guest between two libvirt hosts, end to end.

The guest (built from Debian packages by `ferry guest-image build`) prints
`GUEST-BOOTED id=<id> boot=<n> payload=ok` with a boot counter kept on its own
disk, so the console proves which copy of the disk booted where.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ferry.cmd.embedded import EmbeddedCloud
from ferry.conductor.manager import ConductorEndpoint
from ferry.image.guest import Marker, build_guest_image, last_marker
from tests.support.cloud import Cloud, start_cloud

pytestmark = pytest.mark.libvirt


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("guest") / "guest.img"
    build_guest_image(out, "itest-guest")
    return out


@pytest.fixture
async def real_cloud(tmp_path: Path, guest_image: Path) -> AsyncIterator[Cloud]:
    from ferry.compute.virt.libvirt.daemons import ensure_daemons

    ensure_daemons()
    ec = await start_cloud(tmp_path / "state", driver="libvirt", shutdown_timeout=60,
                           shutdown_retry_interval=2)
    try:
        async with httpx.AsyncClient(base_url=ec.url, timeout=60) as client:
            cloud = Cloud(ec, client)
            yield cloud
            for s in (await client.get("/compute/v2.1/servers")).json()["servers"]:
                await client.delete(f"/compute/v2.1/servers/{s['id']}")
            await ec.conductor.wait_idle()
    finally:
        await _destroy_leftovers(ec)
        await ec.stop()


async def _destroy_leftovers(ec: EmbeddedCloud) -> None:
    for c in ec.computes:
        for uuid in await c.driver.list_instances():
            await c.driver.destroy(uuid)


async def _boot_real(cloud: Cloud, image: Path) -> dict[str, object]:
    image_id = await cloud.upload_image(image.read_bytes(), name="guest", fmt="raw")
    return await cloud.boot(image=image_id, wait="ACTIVE")


async def wait_marker(cloud: Cloud, sid: str, boot: int, timeout: float = 120) -> Marker:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        r = await cloud.action(sid, {"os-getConsoleOutput": {"length": 30}})
        text = r.json()["output"]
        m = last_marker(text)
        if m is not None and m.boot >= boot:
            return m
        await asyncio.sleep(0.5)
    raise AssertionError(f"no boot={boot} marker; console:\n{text}")


def _domains() -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                          capture_output=True, text=True, check=True).stdout


async def test_real_guest_migrate_and_confirm(real_cloud: Cloud, guest_image: Path) -> None:
    cloud = real_cloud
    server = await _boot_real(cloud, guest_image)
    sid, src = str(server["id"]), str(server["OS-EXT-SRV-ATTR:host"])
    before = await wait_marker(cloud, sid, 1)
    assert (before.guest_id, before.boot, before.payload_ok) == ("itest-guest", 1, True)

    assert (await cloud.action(sid, {"migrate": None})).status_code == 202
    s = await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=180)
    dest = s["OS-EXT-SRV-ATTR:host"]
    assert dest != src
    after = await wait_marker(cloud, sid, 2)
    assert (after.guest_id, after.boot, after.payload_ok) == ("itest-guest", 2, True)
    src_mgr, dest_mgr = cloud.cloud.compute(src), cloud.cloud.compute(dest)
    assert src_mgr.store.resize_path(sid).exists()
    assert f"ferry-{dest}-{sid}" in _domains()

    assert (await cloud.action(sid, {"confirmResize": None})).status_code == 204
    await cloud.wait_status(sid, "ACTIVE", timeout=60)
    await cloud.settle()
    assert not src_mgr.store.resize_path(sid).exists()
    assert f"ferry-{src}-{sid}" not in _domains()
    assert dest_mgr.store.path(sid).exists()
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "confirmed" and mig["downtime_s"] > 0


async def test_real_guest_migrate_and_revert_boots_source_copy(real_cloud: Cloud,
                                                               guest_image: Path) -> None:
    cloud = real_cloud
    server = await _boot_real(cloud, guest_image)
    sid, src = str(server["id"]), str(server["OS-EXT-SRV-ATTR:host"])
    await wait_marker(cloud, sid, 1)
    await cloud.action(sid, {"migrate": None})
    s = await cloud.wait_status(sid, "VERIFY_RESIZE", timeout=180)
    dest = s["OS-EXT-SRV-ATTR:host"]
    assert (await wait_marker(cloud, sid, 2)).boot == 2

    assert (await cloud.action(sid, {"revertResize": None})).status_code == 202
    s = await cloud.wait_status(sid, "ACTIVE", timeout=120)
    assert s["OS-EXT-SRV-ATTR:host"] == src
    # The source's own disk booted: its counter goes 1 -> 2. The destination's
    # copy (which had reached 2) would have printed 3.
    m = await wait_marker(cloud, sid, 2)
    assert (m.guest_id, m.boot, m.payload_ok) == ("itest-guest", 2, True)
    await cloud.settle()
    assert not cloud.cloud.compute(dest).store.path(sid).exists()
    assert f"ferry-{dest}-{sid}" not in _domains()


async def test_real_guest_conductor_restart_mid_migration(real_cloud: Cloud,
                                                          guest_image: Path) -> None:
    cloud = real_cloud
    server = await _boot_real(cloud, guest_image)
    sid, src = str(server["id"]), str(server["OS-EXT-SRV-ATTR:host"])
    await wait_marker(cloud, sid, 1)
    await cloud.action(sid, {"migrate": None})
    for _ in range(400):  # the guest takes a second or two to shut down
        migs = await cloud.migrations(sid)
        if migs and migs[0]["state"] == "powering_off":
            break
        await asyncio.sleep(0.01)
    ec = cloud.cloud
    await ec.conductor.stop()
    ec.conductor = ConductorEndpoint.create(ec.sessions, ec.bus, ec.cfg.settings)
    await ec.conductor.start()
    await ec.conductor.wait_idle()
    s = await cloud.wait_status(sid, "ACTIVE", timeout=120)
    assert s["OS-EXT-SRV-ATTR:host"] == src
    [mig] = await cloud.migrations(sid)
    assert mig["status"] == "error"
    # Depending on whether the power-off had reached the host before the
    # conductor stopped, the guest either never went down (boot=1) or was
    # brought back up from its own disk (boot=2); either way it runs on the
    # source, its payload intact, and stays up (no late power-off).
    m = await wait_marker(cloud, sid, 1)
    assert m.boot in (1, 2) and m.payload_ok
    await asyncio.sleep(3)
    assert (await cloud.server(sid))["OS-EXT-STS:power_state"] == 1
    assert await cloud.cloud.compute(src).driver.power_state(sid) == 1
    assert not cloud.cloud.compute(src).store.resize_path(sid).exists()
