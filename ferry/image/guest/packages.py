"""Fetching and unpacking the Debian packages the guest image is made of.

The guest never uses what happens to be installed on the build host: the
kernel, busybox and syslinux come from ``apt-get download`` into a cache
directory and are unpacked there with ``dpkg-deb -x``.  The cache layout is::

    <cache>/debs/<package>_<version>_<arch>.deb     downloaded archives
    <cache>/unpacked/<package>_<version>_<arch>/    their dpkg-deb -x trees
    <cache>/.lock                                   serialises concurrent builds

A package is looked up with ``apt-cache`` (local index only, no network) and
downloaded only when its candidate version is not in the cache yet, so a
second build downloads nothing.  When apt cannot help (no index, no network)
the newest cached archive of the package is used instead.

To add a package to the guest, call :meth:`PackageCache.unpacked` with its
name and read files from the returned tree.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ferry.image.guest.errors import GuestImageError
from ferry.image.guest.tools import require_tool, run

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
SYSLINUX_PACKAGE = "syslinux"
SYSLINUX_COMMON_PACKAGE = "syslinux-common"

_KERNEL_PACKAGE_RE = re.compile(r"^linux-image-\d[\w.+-]*-cloud-amd64$")


def default_cache_dir() -> Path:
    """``$FERRY_CACHE_DIR`` if set, else ``~/.cache/ferry/guest``."""
    env = os.environ.get("FERRY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ferry" / "guest"


@dataclass(frozen=True)
class PackageRef:
    """One exact package version, as apt names it."""

    name: str
    version: str
    arch: str

    @property
    def stem(self) -> str:
        # apt-get download spells the epoch colon as %3a; keep the same file names.
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}"


class PackageCache:
    """Download-once store of Debian packages and their unpacked trees."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.debs = root / "debs"
        self.trees = root / "unpacked"
        self.downloads = 0  # how many archives this instance fetched (tests check reuse)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache lock so parallel builds do not download twice."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def unpacked(self, name: str) -> Path:
        """Return the ``dpkg-deb -x`` tree of package ``name``, fetching it if needed."""
        deb = self.deb(name)
        target = self.trees / deb.name.removesuffix(".deb")
        if target.is_dir():
            return target
        dpkg_deb = require_tool("dpkg-deb")
        self.trees.mkdir(parents=True, exist_ok=True)
        # Unpack beside the target and rename, so an interrupted run never
        # leaves a half-filled tree that later builds would trust.
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.trees))
        try:
            run([dpkg_deb, "-x", deb, tmp])
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def deb(self, name: str) -> Path:
        """Return the cached archive of ``name``'s candidate version, downloading it once."""
        ref = self._candidate(name)
        if ref is None:
            cached = self._newest_cached(name)
            if cached is None:
                raise GuestImageError(
                    f"package {name!r} is unknown to apt and not in the cache {self.debs}; "
                    "run 'apt-get update' on a Debian host with access to the Debian archive"
                )
            return cached
        path = self.debs / f"{ref.stem}.deb"
        if path.is_file():
            return path
        try:
            return self._download(ref, path)
        except GuestImageError:
            cached = self._newest_cached(name)
            if cached is not None:
                # Offline but an older build left an archive: better than failing.
                return cached
            raise

    def kernel_package(self) -> str:
        """Name of the versioned kernel package the cloud metapackage points at."""
        if shutil.which("apt-cache"):
            fields = _apt_show(KERNEL_METAPACKAGE)
            for dep in _split_depends(fields.get("Depends", "")):
                if _KERNEL_PACKAGE_RE.match(dep):
                    return dep
        names = sorted(
            (p.name.split("_", 1)[0] for p in self.debs.glob("linux-image-*-cloud-amd64_*.deb")),
            key=_natural_key,
        )
        names = [n for n in names if _KERNEL_PACKAGE_RE.match(n)]
        if names:
            return names[-1]
        raise GuestImageError(
            f"cannot resolve {KERNEL_METAPACKAGE!r}: apt-cache does not know it and no "
            "kernel is cached; install apt and run 'apt-get update' (Debian bookworm or later)"
        )

    def _candidate(self, name: str) -> PackageRef | None:
        if not shutil.which("apt-cache"):
            return None
        fields = _apt_show(name)
        version, arch = fields.get("Version"), fields.get("Architecture")
        if not version or not arch:
            return None
        return PackageRef(name, version, arch)

    def _download(self, ref: PackageRef, path: Path) -> Path:
        apt_get = require_tool("apt-get")
        self.debs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.debs) as tmp:
            run([apt_get, "download", "-q", f"{ref.name}={ref.version}"], cwd=Path(tmp))
            fetched = list(Path(tmp).glob("*.deb"))
            if len(fetched) != 1:
                raise GuestImageError(
                    f"apt-get download {ref.name} produced {len(fetched)} archives, expected 1"
                )
            fetched[0].rename(path)
        self.downloads += 1
        return path

    def _newest_cached(self, name: str) -> Path | None:
        found = sorted(self.debs.glob(f"{name}_*.deb"), key=lambda p: _natural_key(p.name))
        return found[-1] if found else None


def _apt_show(name: str) -> dict[str, str]:
    """Fields of the candidate version's stanza; empty if apt does not know ``name``."""
    try:
        text = run([require_tool("apt-cache"), "show", "--no-all-versions", name])
    except GuestImageError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # only the first stanza describes the candidate
        if line[0].isspace() or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _split_depends(depends: str) -> list[str]:
    """Package names in a Depends field, ignoring versions and alternatives."""
    names = []
    for clause in depends.split(","):
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ", 1)[0].split(":", 1)[0]
            if name:
                names.append(name)
    return names


def _natural_key(text: str) -> list[int | str]:
    # "6.1.0-9" must sort before "6.1.0-10" when picking the newest cached kernel.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
