"""Run tempest's cold-migration tests against Ferry.

`python -m tests.e2e.tempest_run` starts `ferry up` (fake driver, two hosts)
in a temporary directory, uploads a public image, writes tempest.conf for
that cloud (dynamic credentials through Ferry's Identity v3), runs
`tempest run --regex tempest.api.compute.admin.test_migrations`, prints the
summary and exits with tempest's code. `--clouds-yaml` uses a running Ferry
instead. `--enforce-scope` also runs the variant where tempest's
project_manager (not the admin) does the migrate POST.

To run more tempest tests: pass `--regex`; anything outside cold migration
that needs networks, volumes or live migration is switched off in the config.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import ferryproc

REGEX = "tempest.api.compute.admin.test_migrations"


def tempest_conf(auth: dict[str, Any], image: str, work: Path,
                 enforce_scope: bool = False) -> str:
    scope = ("[enforce_scope]\nnova = True\n" if enforce_scope else "")
    roles = ("nova_policy_roles = admin,manager,member,reader\n" if enforce_scope else "")
    return f"""[DEFAULT]
log_file = {work / 'tempest.log'}
[oslo_concurrency]
lock_path = {work / 'locks'}
[auth]
admin_username = {auth['username']}
admin_password = {auth['password']}
admin_project_name = {auth['project_name']}
admin_domain_name = {auth['user_domain_name']}
use_dynamic_credentials = True
create_isolated_networks = False
[identity]
uri_v3 = {auth['auth_url']}
auth_version = v3
region = RegionOne
[identity-feature-enabled]
api_v2 = False
[compute]
image_ref = {image}
image_ref_alt = {image}
flavor_ref = 1
flavor_ref_alt = 2
min_compute_nodes = 2
build_timeout = 120
build_interval = 1
region = RegionOne
[compute-feature-enabled]
resize = True
cold_migration = True
live_migration = False
console_output = False
{roles}[validation]
run_validation = False
[service_available]
neutron = False
cinder = False
glance = True
nova = True
swift = False
{scope}"""


def run(fp: ferryproc.FerryProcess, work: Path, regex: str = REGEX,
        enforce_scope: bool = False) -> tuple[int, str]:
    """Configure and run tempest in `work` against the running Ferry `fp`."""
    import tempest

    work.mkdir(parents=True, exist_ok=True)
    (work / "locks").mkdir(exist_ok=True)
    image = ferryproc.upload_public_image(fp, "tempest-image", b"\0" * 65536)
    conf = work / "tempest.conf"
    conf.write_text(tempest_conf(fp.cloud()["auth"], image, work, enforce_scope))
    # What `tempest init` writes, without registering a workspace in ~/.tempest.
    pkg = Path(tempest.__file__).parent
    (work / ".stestr.conf").write_text(
        f"[DEFAULT]\ntest_path={pkg / 'test_discover'}\ntop_dir={pkg}\n"
        f"group_regex=([^\\.]*\\.)*\n")
    cmd = [str(ferryproc.BIN / "tempest"), "run", "--config-file", str(conf),
           "--regex", regex, "--concurrency", "1"]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return r.returncode, r.stdout + r.stderr


def summary(output: str) -> dict[str, int]:
    """Totals from tempest's closing block ("- Passed: 6" ...)."""
    out = {}
    for key in ("Passed", "Skipped", "Failed", "Expected Fail", "Unexpected Success"):
        m = re.search(rf"- {key}: (\d+)", output)
        out[key.lower()] = int(m.group(1)) if m else 0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clouds-yaml", type=Path, help="use this running Ferry's clouds.yaml")
    ap.add_argument("--regex", default=REGEX)
    ap.add_argument("--work", type=Path, help="tempest work dir (default: a temp dir)")
    ap.add_argument("--enforce-scope", action="store_true",
                    help="tempest's project_manager does the migrate POST")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ferry-tempest-"))
    work = args.work or root / "tempest"
    fp: ferryproc.FerryProcess | None = None
    try:
        if args.clouds_yaml:
            auth = yaml.safe_load(args.clouds_yaml.read_text())["clouds"]["ferry"]["auth"]
            port = int(auth["auth_url"].split(":")[2].split("/")[0])
            fp = ferryproc.FerryProcess(args.clouds_yaml.parent, port, None)
        else:
            fp = ferryproc.start(root / "state")
            print(f"ferry up at {fp.url}, state in {fp.state_dir}", flush=True)
        rc, output = run(fp, work, args.regex, args.enforce_scope)
        print(output)
        print(f"tempest: {summary(output)}" + (f" (logs in {work})" if rc else ""))
        return rc
    finally:
        if fp is not None:
            fp.stop()
        if not args.work and "rc" in locals() and rc == 0:
            shutil.rmtree(root, ignore_errors=True)  # keep everything when it failed


if __name__ == "__main__":
    sys.exit(main())
