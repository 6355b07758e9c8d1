"""Running the external programs the guest image builder relies on.

Each host tool is listed in :data:`TOOL_PACKAGES` with the Debian package that
provides it, so a missing tool turns into an actionable error instead of a
bare ``FileNotFoundError``.  When a new step needs another program, add it
there and call :func:`require_tool` before using it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ferry.image.guest.errors import GuestImageError

# Debian package that provides each host tool; used only for error messages.
TOOL_PACKAGES: dict[str, str] = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "mattrib": "mtools",
}

# The syslinux installer shells out to mtools; without these it refuses to
# touch an image that is not a real block device with "sane" geometry.
MTOOLS_ENV: dict[str, str] = {"MTOOLS_SKIP_CHECK": "1"}


def require_tool(name: str) -> str:
    """Return the absolute path of ``name`` or raise with what to install."""
    found = shutil.which(name) or _sbin_lookup(name)
    if found is None:
        package = TOOL_PACKAGES.get(name, name)
        raise GuestImageError(
            f"required tool {name!r} not found in PATH; install it with 'apt-get install {package}'"
        )
    return found


def _sbin_lookup(name: str) -> str | None:
    # Non-root shells often lack /usr/sbin in PATH although mkfs.fat lives there.
    for directory in ("/usr/sbin", "/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> str:
    """Run a command, returning stdout; failures become :class:`GuestImageError`."""
    args = [str(a) for a in argv]
    full_env = dict(os.environ)
    # Stable, parseable output from apt and friends regardless of the caller's locale.
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GuestImageError(f"cannot run {args[0]!r}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise GuestImageError(f"{' '.join(args)} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise GuestImageError(f"{' '.join(args)} failed with exit code {proc.returncode}: {detail}")
    return proc.stdout
