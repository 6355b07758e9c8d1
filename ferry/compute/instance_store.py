"""Where a host keeps instance files, and the moves a migration makes on them.

  <instances>/<uuid>/          the live copy
  <instances>/<uuid>_resize/   the source copy kept until confirm or revert
  <instances>/_base/<name>     base images (read-only, shared by overlays)

Every operation is idempotent so a step re-sent after a crash converges.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

RESIZE_SUFFIX = "_resize"


def base_name(image_id: str) -> str:
    """Nova's cache file name for an image: sha1 of its id."""
    return hashlib.sha1(image_id.encode()).hexdigest()


class InstanceStore:
    def __init__(self, instances_path: Path) -> None:
        self.root = instances_path
        self.base_dir = instances_path / "_base"

    def ensure_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)

    def path(self, uuid: str) -> Path:
        return self.root / uuid

    def resize_path(self, uuid: str) -> Path:
        return self.root / f"{uuid}{RESIZE_SUFFIX}"

    def move_to_resize(self, uuid: str) -> Path:
        """Rename the live dir to <uuid>_resize (keeping a _resize that is already there)."""
        live, kept = self.path(uuid), self.resize_path(uuid)
        if live.exists() and kept.exists():
            # A stale _resize from an earlier failed attempt (Nova bug 1960230):
            # the live dir is the newer copy, so it wins.
            shutil.rmtree(kept)
        if live.exists():
            os.rename(live, kept)
        if not kept.exists():
            raise FileNotFoundError(f"no instance directory for {uuid} on this host")
        return kept

    def restore_from_resize(self, uuid: str) -> None:
        live, kept = self.path(uuid), self.resize_path(uuid)
        if kept.exists():
            if live.exists():
                shutil.rmtree(live)
            os.rename(kept, live)
        if not live.exists():
            raise FileNotFoundError(f"neither {live} nor {kept} exists")

    def copy_local(self, uuid: str) -> None:
        """Shared storage: the destination uses a copy next to _resize (reflink when the
        filesystem can), so a revert still finds the untouched original."""
        live, kept = self.path(uuid), self.resize_path(uuid)
        if live.exists():
            shutil.rmtree(live)
        live.mkdir(parents=True)
        for f in kept.iterdir():
            if f.is_file() and f.name != "console.log":
                subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(f),
                                str(live / f.name)], check=True)

    def remove(self, uuid: str) -> None:
        shutil.rmtree(self.path(uuid), ignore_errors=True)

    def remove_resize(self, uuid: str) -> None:
        shutil.rmtree(self.resize_path(uuid), ignore_errors=True)

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize
