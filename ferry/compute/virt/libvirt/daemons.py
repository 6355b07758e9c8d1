"""Make sure libvirtd and virtlogd run (they do not start by themselves here).

`ensure_daemons()` is safe to call from anywhere (Makefile, CLI, driver
init_host, tests) and from several processes at once: a daemon whose socket
answers is left alone; otherwise it is started, through systemd when systemd
runs the machine, else directly as `<daemon> -d` (they daemonize and hold a
pidfile lock, so a racing second start just exits). It then waits until the
sockets answer.

To support another layout (e.g. the modular virtqemud), add a `Daemon` to
`DAEMONS` with its socket and start command.

Command line: `python -m ferry.compute.virt.libvirt.daemons`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RUN_DIR = Path("/run/libvirt")


@dataclass(frozen=True)
class Daemon:
    name: str
    #: any of these sockets answering means the daemon is up
    sockets: tuple[Path, ...]
    systemd_unit: str


DAEMONS: tuple[Daemon, ...] = (
    # virtlogd first: libvirtd needs it to start domains (stdio_handler=logd).
    Daemon("virtlogd", (RUN_DIR / "virtlogd-sock",), "virtlogd.service"),
    Daemon(
        "libvirtd",
        (RUN_DIR / "libvirt-sock", RUN_DIR / "virtqemud-sock"),
        "libvirtd.service",
    ),
)


class DaemonError(RuntimeError):
    pass


def socket_answers(path: Path) -> bool:
    """True when a unix socket at `path` accepts a connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def is_running(daemon: Daemon) -> bool:
    return any(socket_answers(p) for p in daemon.sockets)


def _systemd_runs() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _start(daemon: Daemon) -> str:
    """Start `daemon`; returns the start command's complaint ("" when none)."""
    if _systemd_runs():
        cmd = ["systemctl", "start", daemon.systemd_unit]
    else:
        exe = shutil.which(daemon.name) or next(
            (p for p in (f"/usr/sbin/{daemon.name}", f"/sbin/{daemon.name}") if os.path.exists(p)),
            None,
        )
        if exe is None:
            raise DaemonError(
                f"{daemon.name} is not installed (apt-get install libvirt-daemon-system)"
            )
        cmd = [exe, "-d"]
    # The daemon forks into the background: do not let it hold our stdio.
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        timeout=30,
        check=False,
    )
    if proc.returncode == 0:
        return ""
    # A concurrent start may have won the pidfile race: the caller still waits
    # for the socket and only reports this when it does not come up.
    err = proc.stderr.decode(errors="replace").strip()
    return f"{' '.join(cmd)} exited {proc.returncode}: {err}"


def ensure_daemons(timeout: float = 20.0) -> list[str]:
    """Start whichever of virtlogd/libvirtd is not answering; wait for both.

    Returns the names of the daemons this call started (empty when all ran).
    Raises DaemonError when one does not come up within `timeout` seconds.
    """
    started: list[str] = []
    for daemon in DAEMONS:
        if is_running(daemon):
            continue
        complaint = _start(daemon)
        started.append(daemon.name)
        deadline = time.monotonic() + timeout
        while not is_running(daemon):
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"{daemon.name} did not answer on "
                    f"{' or '.join(map(str, daemon.sockets))} within {timeout:.0f}s"
                    + (f" ({complaint})" if complaint else "")
                )
            time.sleep(0.1)
    return started


def main() -> None:
    started = ensure_daemons()
    print("started: " + ", ".join(started) if started else "libvirtd and virtlogd already run")


if __name__ == "__main__":
    main()
