"""Processes the benchmark runs and what they cost (CPU seconds, peak memory).

:class:`Side` starts one side of a transfer (a command, or a shell pipeline)
and reaps it with ``wait4``, which returns the rusage of that process *and
of every descendant it waited for*: a shell pipeline, or ``sshd -i`` with
the ``rsync``/``scp`` server it forks, is measured as one side.  Peak memory
is ``ru_maxrss`` (the largest process of the side, in KiB).

:func:`ssh_setup` prepares a private sshd: host key, client key,
``authorized_keys`` and a config; :class:`InetdSSH` accepts one connection
on a loopback port and runs ``sshd -i`` on it as our own child (so its cost
is measured, and no system sshd is touched).

To measure another kind of side (e.g. a remote host over ssh), give it the
same ``wait`` method returning :class:`Usage`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Usage:
    cpu: float  # user + system seconds, descendants included
    maxrss_kib: int
    status: int

    @staticmethod
    def of(status: int, ru: object) -> Usage:
        cpu = ru.ru_utime + ru.ru_stime  # type: ignore[attr-defined]
        return Usage(cpu, int(ru.ru_maxrss), status)  # type: ignore[attr-defined]

    def plus(self, other: Usage) -> Usage:
        return Usage(
            self.cpu + other.cpu,
            max(self.maxrss_kib, other.maxrss_kib),
            self.status or other.status,
        )


# GNU time forks the measured command from a small process: a child forked
# from the (large) benchmark process itself would report the benchmark's
# RSS as its peak, since ru_maxrss survives exec.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


class Side:
    """One process (tree) of a transfer, measured when reaped."""

    def __init__(
        self,
        argv: list[str] | str,
        *,
        env: dict[str, str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        command = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
        self.argv = argv
        self._timefile: Path | None = None
        if TIME is not None:
            fd, name = tempfile.mkstemp(prefix="ferry-bench-time-")
            os.close(fd)
            self._timefile = Path(name)
            command = [TIME, "-q", "-f", "%U %S %M", "-o", name, *command]
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdin=stdin,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
        self.usage: Usage | None = None
        self.output = b""
        self.errors = b""
        self._reader: threading.Thread | None = None
        if self.proc.stdout is not None or self.proc.stderr is not None:
            # Drain pipes in a thread so a chatty tool never blocks on them.
            self._reader = threading.Thread(target=self._drain, daemon=True)
            self._reader.start()

    def _drain(self) -> None:
        if self.proc.stdout is not None:
            self.output = self.proc.stdout.read()
        if self.proc.stderr is not None:
            self.errors = self.proc.stderr.read()

    def wait(self, timeout: float | None = None) -> Usage:
        if self.usage is not None:
            return self.usage
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                pid, status, ru = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.005)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self._reader is not None:
            self._reader.join(5)
        self.usage = Usage.of(self.proc.returncode, ru)
        if self._timefile is not None:
            fields = self._timefile.read_text().split()
            self._timefile.unlink()
            if len(fields) >= 3:
                self.usage = Usage(
                    float(fields[-3]) + float(fields[-2]), int(fields[-1]), self.proc.returncode
                )
        return self.usage

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Usage:
        """Ask the measured command to exit (not GNU time, which must report)."""
        if self.usage is None:
            targets = children_of(self.proc.pid) if self._timefile is not None else []
            for pid in targets or [self.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        return self.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def check(self, what: str) -> None:
        if self.usage is not None and self.usage.status not in (0, -signal.SIGTERM, 143):
            raise RuntimeError(
                f"{what} failed ({self.usage.status}): "
                f"{self.errors.decode(errors='replace')[-2000:]}"
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class SSHConfig:
    config: Path
    client_key: Path
    known_hosts: Path

    def ssh_opts(self, port: int) -> list[str]:
        return [
            "-p",
            str(port),
            "-i",
            str(self.client_key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "LogLevel=ERROR",
        ]


def ssh_setup(directory: Path) -> SSHConfig:
    """Keys and an sshd config of our own under ``directory`` (mode 0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # sshd refuses to start without its privilege separation directory,
    # which the distribution's service would create at boot.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
    auth = directory / "authorized_keys"
    auth.write_text((directory / "client_ed25519.pub").read_text())
    auth.chmod(0o600)
    sftp = next(
        (
            p
            for p in (
                "/usr/lib/openssh/sftp-server",
                "/usr/libexec/openssh/sftp-server",
                "/usr/lib/ssh/sftp-server",
            )
            if os.path.exists(p)
        ),
        "internal-sftp",
    )
    config = directory / "sshd_config"
    config.write_text(
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {auth}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\n"
        # Our keys live under a temp dir whose parents (/var/tmp) are
        # world-writable: sshd would refuse them with StrictModes.
        "StrictModes no\n"
        f"Subsystem sftp {sftp}\nLogLevel ERROR\n"
    )
    return SSHConfig(config, client_key, directory / "known_hosts")


class InetdSSH:
    """``sshd -i`` on one accepted loopback connection, as a measured Side."""

    def __init__(self, cfg: SSHConfig) -> None:
        self.cfg = cfg
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = int(self._listener.getsockname()[1])
        self.side: Side | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        with conn:
            self.side = Side(
                [sshd, "-i", "-f", str(self.cfg.config)],
                stdin=conn.fileno(),
                stdout=conn.fileno(),
                stderr=subprocess.PIPE,
            )
        self._ready.set()

    def wait(self, timeout: float = 600.0) -> Usage:
        self._listener.close()
        if not self._ready.wait(10):
            raise RuntimeError("ssh client never connected")
        assert self.side is not None
        return self.side.wait(timeout)
