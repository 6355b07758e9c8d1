"""The same flow through openstacksdk (from PyPI) with the generated clouds.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ferryproc import FerryProcess

# The SDK warns about its own deprecations on every call; they are not Ferry's.
pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::Warning:openstack")]
openstack = pytest.importorskip("openstack", reason="openstacksdk is not installed")


def _connect(fp: FerryProcess) -> Any:
    from openstack import config as os_config
    from openstack import connection

    cfg = os_config.OpenStackConfig(config_files=[str(fp.clouds_yaml)])
    return connection.Connection(config=cfg.get_one(cloud="ferry"))


def test_sdk_migrate_confirm_and_revert(ferry: FerryProcess, tmp_path: Path) -> None:
    conn = _connect(ferry)
    data = tmp_path / "sdk.raw"
    data.write_bytes(b"\0" * 32768 + b"sdk")
    image = conn.image.create_image(name="sdk-base", filename=str(data), disk_format="raw",
                                    container_format="bare", visibility="public")
    # The SDK returns the record it created (queued); the upload made it active.
    image = conn.image.get_image(image.id)
    assert image.status == "active" and image.size == data.stat().st_size
    flavor = conn.compute.find_flavor("ferry.tiny")
    server = conn.compute.create_server(name="sdk-vm", image_id=image.id,
                                        flavor_id=flavor.id)
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
    src = server.compute_host
    assert src in ("host1", "host2")

    conn.compute.migrate_server(server)
    server = conn.compute.wait_for_server(server, status="VERIFY_RESIZE", wait=60,
                                          interval=0.5)
    assert server.compute_host != src
    conn.compute.confirm_server_resize(server)
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
    dest = server.compute_host
    assert dest != src and server.task_state is None

    conn.compute.migrate_server(server)
    server = conn.compute.wait_for_server(server, status="VERIFY_RESIZE", wait=60,
                                          interval=0.5)
    conn.compute.revert_server_resize(server)
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
    assert server.compute_host == dest

    migs = [m for m in conn.compute.migrations() if m.server_id == server.id]
    assert sorted(m.status for m in migs) == ["confirmed", "reverted"]
    assert {m.migration_type for m in migs} == {"migration"}
    assert {h.name for h in conn.compute.hypervisors()} == {"host1", "host2"}
    assert {s.host for s in conn.compute.services()} == {"host1", "host2"}
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=60, interval=0.5)
