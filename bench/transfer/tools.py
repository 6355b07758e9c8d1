"""How each tool moves a disk file on loopback, measured the same way.

Every tool has a receiving side and a sending side started as separate
measured processes (:class:`~bench.transfer.procs.Side`); the clock runs
from the moment the sending side starts until both sides have exited.  When
``relay`` is given, the sending side talks to the relay's port instead of
the receiver's, so the bytes that crossed the socket are counted.

The tools, as users would run them:

* ``ferry``: ``send_files`` -> ``TransferServer`` (2 streams, 4 MiB chunks,
  checksums on, fsync before commit); the receiver is a service, so the
  clock stops when the sender has the verdict (as for ``qemu-nbd``);
* ``rsync``: ``rsync -S`` over ssh (a private ``sshd -i`` as the receiver);
* ``scp``: OpenSSH's default ``scp`` (SFTP) over the same sshd;
* ``nbd``: ``qemu-nbd --read-only -f FMT`` exporting the disk,
  ``qemu-img convert -O FMT nbd://...`` pulling it (for the overlay with
  ``-B base``, which keeps it an overlay but copies the chain's data);
* ``tar-nc``: ``tar -cS | nc`` into ``nc -l | tar -xS``;
* ``cp``: ``cp --sparse=always`` on the same disk, the local limit.

To add a tool: write a function with the signature of :func:`run_scp`, list
it in :data:`TOOLS` with the executables it needs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .disks import Disk
from .procs import InetdSSH, Side, SSHConfig, Usage, free_port, wait_port
from .proxy import Relay

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Ctx:
    python: str
    ssh: SSHConfig | None
    streams: int = 2
    chunk_mib: int = 4
    work: Path = Path("/tmp")


@dataclass
class Measured:
    wall: float
    src: Usage
    dst: Usage
    extra: dict[str, Any] = field(default_factory=dict)


Relayer = Callable[[int], Relay | None]  # receiver port -> relay in front of it (or None)


def _finish(
    started: float, client: Side, server: Side | InetdSSH, what: str, daemon: bool = False
) -> Measured:
    """Wait for the sending side (``client``) and the receiving side.

    A ``daemon`` receiver (Ferry's TransferServer, like qemu-nbd) is a
    service that outlives a transfer: the transfer is over when the client
    has its verdict (for Ferry: files verified, fsynced and renamed), so the
    clock stops then and the service's own exit is not timed.
    """
    src = client.wait(3600)
    wall = time.monotonic() - started
    dst = server.wait(600)
    if not daemon:
        wall = time.monotonic() - started
    client.check(what + " (sending side)")
    if isinstance(server, Side):
        server.check(what + " (receiving side)")
    return Measured(wall, src, dst)


def _port(relay: Relay | None, port: int) -> int:
    return relay.port if relay is not None else port


def run_ferry(disk: Disk, dst: Path, ctx: Ctx, relayer: Relayer) -> Measured:
    port_file = ctx.work / f"ferry-port-{secrets.token_hex(4)}"
    env = {
        "FERRY_TOKEN": secrets.token_urlsafe(32),
        "FERRY_MIGRATION": "bench",
        "PYTHONPATH": str(ROOT),
    }
    receiver = Side(
        [
            ctx.python,
            "-m",
            "bench.transfer.ferry_side",
            "recv",
            str(dst),
            f"{disk.path.name}={disk.size}",
            str(port_file),
            "--state",
            str(ctx.work / f"grants-{secrets.token_hex(4)}.json"),
        ],
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if receiver.proc.poll() is not None or time.monotonic() > deadline:
            receiver.wait(5)
            receiver.check("ferry receiver")
            raise RuntimeError("ferry receiver did not start")
        time.sleep(0.01)
    port = int(port_file.read_text())
    port_file.unlink()
    relay = relayer(port)
    started = time.monotonic()
    sender = Side(
        [
            ctx.python,
            "-m",
            "bench.transfer.ferry_side",
            "send",
            f"127.0.0.1:{_port(relay, port)}",
            str(disk.path.parent),
            disk.path.name,
            "--streams",
            str(ctx.streams),
            "--chunk-mib",
            str(ctx.chunk_mib),
        ],
        env=env,
        cwd=ROOT,
    )
    out = _finish(started, sender, receiver, "ferry", daemon=True)
    out.extra = json.loads(sender.output)
    return out


def run_rsync(disk: Disk, dst: Path, ctx: Ctx, relayer: Relayer) -> Measured:
    assert ctx.ssh is not None
    server = InetdSSH(ctx.ssh)
    relay = relayer(server.port)
    ssh = " ".join(["ssh", *ctx.ssh.ssh_opts(_port(relay, server.port))])
    started = time.monotonic()
    client = Side(["rsync", "-S", "-e", ssh, str(disk.path), f"root@127.0.0.1:{dst}/"])
    return _finish(started, client, server, "rsync")


def run_scp(disk: Disk, dst: Path, ctx: Ctx, relayer: Relayer) -> Measured:
    assert ctx.ssh is not None
    server = InetdSSH(ctx.ssh)
    relay = relayer(server.port)
    opts = ctx.ssh.ssh_opts(_port(relay, server.port))
    opts[0] = "-P"  # scp spells the port option differently
    started = time.monotonic()
    client = Side(["scp", "-q", *opts, str(disk.path), f"root@127.0.0.1:{dst}/"])
    return _finish(started, client, server, "scp")


def run_nbd(disk: Disk, dst: Path, ctx: Ctx, relayer: Relayer) -> Measured:
    port = free_port()
    server = Side(
        [
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-f",
            disk.fmt,
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "-x",
            "disk",
            str(disk.path),
        ]
    )
    wait_port(port)
    relay = relayer(port)
    backing = ["-B", str(disk.backing), "-F", "qcow2"] if disk.backing is not None else []
    started = time.monotonic()
    client = Side(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            disk.fmt,
            *backing,
            f"nbd://127.0.0.1:{_port(relay, port)}/disk",
            str(dst / disk.path.name),
        ]
    )
    writer = client.wait(3600)
    wall = time.monotonic() - started
    reader = server.stop()  # --persistent: a service, stopped after the transfer
    client.check("qemu-img convert")
    return Measured(wall, reader, writer)  # qemu-nbd serves the source, qemu-img writes


def run_tar_nc(disk: Disk, dst: Path, ctx: Ctx, relayer: Relayer) -> Measured:
    port = free_port()
    server = Side(f"nc -l 127.0.0.1 {port} | tar -xSf - -C {dst}")
    wait_port_listening(port)
    relay = relayer(port)
    started = time.monotonic()
    client = Side(
        f"tar -cSf - -C {disk.path.parent} {disk.path.name} | nc -N 127.0.0.1 {_port(relay, port)}"
    )
    return _finish(started, client, server, "tar | nc")


def run_cp(disk: Disk, dst: Path, ctx: Ctx, relayer: Relayer) -> Measured:
    started = time.monotonic()
    side = Side(["cp", "--sparse=always", str(disk.path), str(dst / disk.path.name)])
    usage = side.wait(3600)
    side.check("cp")
    return Measured(time.monotonic() - started, usage, Usage(0.0, 0, 0))


def wait_port_listening(port: int, timeout: float = 10.0) -> None:
    """Wait for a listener without connecting to it (nc -l serves one connection)."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            if any(needle in line and " 0A " in line for line in f):
                return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass(frozen=True)
class Tool:
    name: str
    label: str
    run: Callable[[Disk, Path, Ctx, Relayer], Measured]
    needs: tuple[str, ...]
    network: bool = True


TOOLS = [
    Tool("ferry", "Ferry engine", run_ferry, ()),
    Tool("rsync", "rsync -S over ssh", run_rsync, ("rsync", "ssh", "sshd", "ssh-keygen")),
    Tool("scp", "scp", run_scp, ("scp", "ssh", "sshd", "ssh-keygen")),
    Tool("nbd", "qemu-img convert from qemu-nbd", run_nbd, ("qemu-nbd", "qemu-img")),
    Tool("tar-nc", "tar -S | nc", run_tar_nc, ("tar", "nc")),
    Tool("cp", "cp --sparse=always (local)", run_cp, ("cp",), network=False),
]


def missing(tool: Tool) -> list[str]:
    found = []
    for exe in tool.needs:
        path = shutil.which(exe) or (
            f"/usr/sbin/{exe}" if os.path.exists(f"/usr/sbin/{exe}") else None
        )
        if path is None:
            found.append(exe)
    return found
