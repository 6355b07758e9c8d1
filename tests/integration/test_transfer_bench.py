"""The transfer benchmark's quick mode as a smoke test: real qcow2/raw disks,
qemu-img compare, the counting relay and a resume after a cut.

Slow-ish (~1 min) and needs qemu-utils, so it is marked like the other tests
that need QEMU.  The full comparison is ``python -m bench.transfer``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.libvirt

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("qemu-img", "qemu-io", "qemu-nbd", "nc", "tar")),
    reason="needs qemu-utils, netcat-openbsd and tar",
)
def test_quick_benchmark_moves_every_disk_identically(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.transfer",
            "--quick",
            "--tools",
            "ferry,nbd,tar-nc,cp",
            "--no-doc",
            "--results",
            str(tmp_path),
        ],
        cwd=ROOT,
        check=True,
        timeout=600,
        capture_output=True,
    )
    (run,) = tmp_path.iterdir()
    data = json.loads((run / "results.json").read_text())
    ferry = [r for r in data["results"] if r["tool"] == "ferry"]
    assert {r["disk"] for r in ferry} == {"a", "b", "c"}
    for r in ferry:
        allocated = data["meta"]["disks"][r["disk"]]["allocated"]
        assert r["identical"] and r["sparse"]
        assert r["wire"] <= 1.02 * allocated + 65536
        assert max(r["rss_src_mib"], r["rss_dst_mib"]) < 150
    for r in data["resume"]:
        assert r["identical"] and r["attempts"] >= 2
        # Quick disks are small, so one lost 4 MiB chunk per stream weighs more.
        assert r["ratio_wire"] <= 1.5
    text = (run / "results.md").read_text()
    assert "### Targets" in text
    # Both readings of the local limit are reported, never just one.
    assert text.count("within 2x of cp --sparse=always (plain, page cache)") == 3
    assert text.count("within 2x of cp --sparse=always + fsync (disk limit)") == 3
    assert text.count("Local limit: `cp --sparse=always`") == 3
