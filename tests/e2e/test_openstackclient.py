"""`openstack` (python-openstackclient from PyPI) against a running Ferry, as an
operator types it; every output is parsed (-f json) and checked."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ferryproc import BIN, FerryProcess

pytestmark = pytest.mark.e2e
OPENSTACK = BIN / "openstack"
if not OPENSTACK.exists():
    pytest.skip("python-openstackclient is not installed in this venv", allow_module_level=True)


def osc(fp: FerryProcess, *args: str, env: dict[str, str] | None = None,
        ok: bool = True, as_json: bool = True) -> Any:
    cmd = [str(OPENSTACK), *args] + (["-f", "json"] if as_json else [])
    r = subprocess.run(cmd, env=env or fp.env(), capture_output=True, text=True, timeout=300)
    if not ok:
        assert r.returncode != 0, r.stdout
        return r.stderr
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout}\n{r.stderr}\n{fp.log()[-3000:]}"
    return json.loads(r.stdout) if as_json and r.stdout.strip() else r.stdout


def show(fp: FerryProcess, server: str) -> dict[str, Any]:
    s: dict[str, Any] = osc(fp, "server", "show", server)
    return s


def wait(fp: FerryProcess, server: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = show(fp, server)
        if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
            return s
        assert s["status"] != "ERROR", s
        assert time.monotonic() < deadline, s
        time.sleep(0.5)


def _decide(fp: FerryProcess, verb: str, server: str) -> None:
    """`server migration confirm|revert` (OSC >= 6), else `server migrate confirm|revert`."""
    help_text = osc(fp, "help", "server", "migration", as_json=False, ok=True)
    if f"server migration {verb}" in help_text:
        osc(fp, "server", "migration", verb, server, as_json=False)
    else:
        osc(fp, "server", "migrate", verb, server, as_json=False)


@pytest.fixture(scope="module")
def image(ferry: FerryProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = Path(tmp_path_factory.mktemp("img")) / "base.raw"
    path.write_bytes(b"\0" * 65536 + b"ferry-e2e" * 100)
    img = osc(ferry, "image", "create", "--file", str(path), "--disk-format", "raw",
              "--container-format", "bare", "--public", "e2e-base")
    assert img["status"] == "active" and img["visibility"] == "public"
    assert img["size"] == path.stat().st_size
    image_id: str = img["id"]
    return image_id


def test_hypervisors_and_compute_services(ferry: FerryProcess) -> None:
    hyps = osc(ferry, "hypervisor", "list")
    assert sorted(h["Hypervisor Hostname"] for h in hyps) == ["host1", "host2"]
    assert {h["State"] for h in hyps} == {"up"}
    services = osc(ferry, "compute", "service", "list")
    assert sorted(s["Host"] for s in services) == ["host1", "host2"]
    assert {(s["Status"], s["State"]) for s in services} == {("enabled", "up")}
    token = osc(ferry, "token", "issue")
    assert token["id"] and token["project_id"] and token["expires"]


def test_compute_service_set_disable_and_enable(ferry: FerryProcess) -> None:
    def host1() -> dict[str, Any]:
        rows = osc(ferry, "compute", "service", "list", "--long")
        row: dict[str, Any] = next(s for s in rows if s["Host"] == "host1")
        return row

    osc(ferry, "compute", "service", "set", "--disable", "--disable-reason", "e2e maintenance",
        "host1", "ferry-compute", as_json=False)
    row = host1()
    assert (row["Status"], row["Disabled Reason"]) == ("disabled", "e2e maintenance")
    # Nova's binary name works too, and the older action form (before 2.53).
    osc(ferry, "--os-compute-api-version", "2.11", "compute", "service", "set", "--enable",
        "host1", "nova-compute", as_json=False)
    row = host1()
    assert (row["Status"], row["Disabled Reason"]) == ("enabled", None)
    osc(ferry, "compute", "service", "set", "--down", "host1", "ferry-compute", as_json=False)
    assert host1()["State"] == "down"
    osc(ferry, "compute", "service", "set", "--up", "host1", "ferry-compute", as_json=False)
    assert host1()["State"] == "up"
    err = osc(ferry, "compute", "service", "set", "--disable", "host9", "ferry-compute",
              ok=False, as_json=False)
    assert "host9" in err
    assert {s["Status"] for s in osc(ferry, "compute", "service", "list")} == {"enabled"}


def test_migrate_confirm_revert_host_and_resize(ferry: FerryProcess, image: str) -> None:
    created = osc(ferry, "server", "create", "--image", image, "--flavor", "ferry.tiny",
                  "--wait", "e2e-vm")
    sid = created["id"]
    s = show(ferry, sid)
    assert s["status"] == "ACTIVE"
    first = s["OS-EXT-SRV-ATTR:host"]
    assert first in ("host1", "host2")
    other = "host2" if first == "host1" else "host1"

    osc(ferry, "server", "migrate", "--wait", sid, as_json=False)
    s = show(ferry, sid)
    assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("VERIFY_RESIZE", other)
    _decide(ferry, "confirm", sid)
    assert wait(ferry, sid, "ACTIVE")["OS-EXT-SRV-ATTR:host"] == other

    osc(ferry, "server", "migrate", "--wait", sid, as_json=False)
    assert show(ferry, sid)["OS-EXT-SRV-ATTR:host"] == first
    _decide(ferry, "revert", sid)
    assert wait(ferry, sid, "ACTIVE")["OS-EXT-SRV-ATTR:host"] == other

    osc(ferry, "--os-compute-api-version", "2.56", "server", "migrate", "--host", first,
        "--wait", sid, as_json=False)
    s = show(ferry, sid)
    assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("VERIFY_RESIZE", first)
    _decide(ferry, "confirm", sid)
    wait(ferry, sid, "ACTIVE")

    migs = [m for m in osc(ferry, "server", "migration", "list", "--server", sid)
            if m["Server UUID"] == sid]
    # Newest first: the three cold migrations of this server and how each ended.
    assert [m["Status"] for m in migs] == ["confirmed", "reverted", "confirmed"]
    assert {m["Type"] for m in migs} == {"migration"}
    assert migs[0]["Dest Compute"] == first and migs[0]["Source Compute"] == other

    osc(ferry, "server", "resize", "--flavor", "ferry.small", "--wait", sid, as_json=False)
    s = show(ferry, sid)
    assert s["status"] == "VERIFY_RESIZE" and s["flavor"]["name"] == "ferry.small"
    _decide(ferry, "confirm", sid)
    s = wait(ferry, sid, "ACTIVE")
    assert s["flavor"]["name"] == "ferry.small"
    resize = osc(ferry, "server", "migration", "list", "--server", sid, "--type", "resize")
    assert [m["Status"] for m in resize] == ["confirmed"]
    osc(ferry, "server", "delete", "--wait", sid, as_json=False)
    assert sid not in {x["ID"] for x in osc(ferry, "server", "list")}


def test_identity_commands_and_a_member_who_may_not_migrate(
        ferry: FerryProcess, image: str, tmp_path: Path) -> None:
    project = osc(ferry, "project", "create", "e2e-proj")
    user = osc(ferry, "user", "create", "--project", "e2e-proj", "--password", "pw-e2e",
               "e2e-member")
    assert user["name"] == "e2e-member" and "password" not in user
    osc(ferry, "role", "add", "--project", "e2e-proj", "--user", "e2e-member", "member",
        as_json=False)
    assigned = osc(ferry, "role", "assignment", "list", "--user", "e2e-member", "--names")
    assert [(a["Role"], a["Project"]) for a in assigned] == [("member", "e2e-proj@Default")]
    env = ferry.env()
    for key in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE"):
        env.pop(key)
    env.update(OS_AUTH_URL=ferry.cloud()["auth"]["auth_url"], OS_USERNAME="e2e-member",
               OS_PASSWORD="pw-e2e", OS_PROJECT_NAME="e2e-proj",
               OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default",
               OS_IDENTITY_API_VERSION="3", OS_REGION_NAME="RegionOne")
    s = osc(ferry, "server", "create", "--image", image, "--flavor", "ferry.tiny", "--wait",
            "member-vm", env=env)
    assert s["status"] == "ACTIVE" and s["project_id"] == project["id"]
    assert s["OS-EXT-SRV-ATTR:host"] is None  # admin-only: not sent (OSC shows None)
    err = osc(ferry, "server", "migrate", s["id"], env=env, ok=False, as_json=False)
    assert "403" in err and "os-migrate-server:migrate" in err
    # The admin's project cannot see it by name; a wrong password is a 401.
    assert "e2e-member" not in str(osc(ferry, "server", "list"))
    bad = {**env, "OS_PASSWORD": "wrong"}
    err = osc(ferry, "server", "list", env=bad, ok=False, as_json=False)
    assert "401" in err and "requires authentication" in err
    osc(ferry, "server", "delete", "--wait", s["id"], env=env, as_json=False)
