"""Compute hosts in their own network namespaces, joined by a Linux bridge.

    lab = NetnsLab(["node1", "node2", "node3"])
    lab.up()                                   # bridge, namespaces, veths, addresses
    ports = lab.forward({"amqp": ("127.0.0.1", 5672), "api": ("127.0.0.1", api_port)})
    cluster.start_compute_env("node1", f"{lab['node1'].address}:0",
                              wrap=lab["node1"].wrap, ...)
    lab.cut("node2"); lab.restore("node2")     # pull / put back node2's cable
    lab.shape("node2", "32mbit")               # slow node2's link (tc tbf, both ways)
    lab.down()                                 # everything goes, also after a failure

Layout (`<r>` is random per lab, so labs of parallel runs never collide)::

    root namespace                               ferry-<r>-nodeK
    127.0.0.1:5672 (broker)  127.0.0.1:P (API)
          ^                        ^
          |  forwarder process (python -m tests.support.netns forward ...)
          |                        |
    fbr-<r>  10.231.B.1/24 ---- fv<r>nK ==veth== eth0  10.231.B.(10+K)/24, lo up

The broker and the database listen on the root namespace's loopback only; a
namespace reaches the broker and the API through a small TCP forwarder that
listens on the bridge's address. The 10.231.B.0/24 addresses exist only on
the bridge and in the namespaces the lab creates (B is a free /24, checked
against the machine's routes). Nothing of the machine's own network is
changed: no iptables, no routes outside the lab's own devices.

A lab leaves a pid file in /run/ferry-netns/; `sweep_stale()` removes what a
killed test run left behind (only namespaces and bridges whose creating
process is gone, and only with this module's naming).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path("/run/ferry-netns")
_NS_RE = re.compile(r"^ferry-([0-9a-f]{6})-\w+$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def available() -> str | None:
    """None when labs can be built here, else why not (for a skip/fail message)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} (iproute2) is not installed"
    return None


@dataclass
class Node:
    name: str  # the Ferry host name, e.g. "node1"
    netns: str  # ferry-<r>-node1
    address: str  # 10.231.B.11
    host_veth: str  # the bridge side of the veth pair, in the root namespace
    index: int

    @property
    def wrap(self) -> list[str]:
        """Prefix that runs a command inside this node's namespace (ip execs it,
        so the process id is the command's own: kill -9 reaches it)."""
        return ["ip", "netns", "exec", self.netns]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.wrap, *args, check=check)


@dataclass
class NetnsLab:
    names: list[str]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: int | None = None  # B in 10.231.B.0/24; a free one is picked when None
    nodes: dict[str, Node] = field(default_factory=dict)
    forwarder: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    _log: Path | None = None

    @property
    def bridge(self) -> str:
        return f"fbr-{self.tag}"

    @property
    def bridge_address(self) -> str:
        return f"10.231.{self.subnet}.1"

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    # -- build and tear down ----------------------------------------------------

    def up(self, log_dir: Path | None = None) -> NetnsLab:
        """Build the bridge and one namespace per node; on any failure, undo it all."""
        why = available()
        if why:
            raise RuntimeError(why)
        sweep_stale()
        self._log = log_dir
        if self.subnet is None:
            self.subnet = _free_subnet()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / f"{self.tag}.pid").write_text(str(os.getpid()))
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(self.names, start=1):
                self._add_node(i, name)
        except BaseException:
            self.down()
            raise
        return self

    def _add_node(self, i: int, name: str) -> None:
        node = Node(
            name=name,
            netns=f"ferry-{self.tag}-{name}",
            address=f"10.231.{self.subnet}.{10 + i}",
            host_veth=f"fv{self.tag}n{i}",
            index=i,
        )
        self.nodes[name] = node
        _ip("netns", "add", node.netns)
        _ip(
            "link",
            "add",
            node.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.netns,
        )
        _ip("link", "set", node.host_veth, "master", self.bridge)
        _ip("link", "set", node.host_veth, "up")
        node.run("ip", "link", "set", "lo", "up")
        node.run("ip", "addr", "add", f"{node.address}/24", "dev", "eth0")
        node.run("ip", "link", "set", "eth0", "up")

    def down(self) -> None:
        """Remove forwarder, namespaces, veths and bridge; never raises."""
        self.stop_forwarder()
        for node in self.nodes.values():
            # Deleting the namespace deletes its end of the veth, hence the pair.
            _ip("netns", "del", node.netns, check=False)
            _ip("link", "del", node.host_veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        with contextlib.suppress(OSError):
            (STATE_DIR / f"{self.tag}.pid").unlink()

    def __enter__(self) -> NetnsLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- the forwarder to the root namespace's loopback ------------------------------

    def forward(self, targets: dict[str, tuple[str, int]], timeout: float = 15) -> dict[str, int]:
        """Start the forwarder: for each name a port on the bridge address that
        relays to `targets[name]`. Returns {name: port}."""
        self.stop_forwarder()
        args = [f"{name}={host}:{port}" for name, (host, port) in targets.items()]
        log = open(self._log / "forwarder.log", "ab") if self._log else None  # noqa: SIM115
        self.forwarder = subprocess.Popen(
            [sys.executable, "-m", "tests.support.netns", "forward", self.bridge_address, *args],
            stdout=subprocess.PIPE,
            stderr=log or subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self.forwarder.stdout is not None
        ready, _, _ = select.select([self.forwarder.stdout], [], [], timeout)
        line = self.forwarder.stdout.readline() if ready else b""
        if not line:
            code = self.forwarder.poll()
            self.stop_forwarder()
            raise RuntimeError(f"the forwarder did not report its ports (exit code {code})")
        self.ports = {k: int(v) for k, v in json.loads(line).items()}
        return dict(self.ports)

    def url(self, name: str) -> str:
        """host:port on the bridge for the forwarded target `name`."""
        return f"{self.bridge_address}:{self.ports[name]}"

    def stop_forwarder(self) -> None:
        p, self.forwarder = self.forwarder, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)

    # -- faults ---------------------------------------------------------------------------

    def cut(self, name: str) -> None:
        """Pull the node's cable: its bridge-side veth goes down (no carrier inside)."""
        _ip("link", "set", self.nodes[name].host_veth, "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.nodes[name].host_veth, "up")

    @contextlib.contextmanager
    def link_cut(self, name: str) -> Iterator[None]:
        self.cut(name)
        try:
            yield
        finally:
            self.restore(name)

    def reset_connections(self, name: str, port: int) -> str:
        """Abort the node's established TCP connections to or from `port` (ss -K), as
        a reset by a middlebox would: both ends see ECONNABORTED. Returns what ss saw."""
        r = self.nodes[name].run(
            "ss",
            "-K",
            "-tn",
            "state",
            "established",
            f"( dport = :{port} or sport = :{port} )",
            check=False,
        )
        return r.stdout

    def shape(self, name: str, rate: str, burst: str = "64kb", latency: str = "400ms") -> None:
        """Limit the node's link to `rate` (tc syntax, e.g. "32mbit") in both directions."""
        node = self.nodes[name]
        tbf = ["tbf", "rate", rate, "burst", burst, "latency", latency]
        _run("tc", "qdisc", "replace", "dev", node.host_veth, "root", *tbf)
        node.run("tc", "qdisc", "replace", "dev", "eth0", "root", *tbf)

    def unshape(self, name: str) -> None:
        node = self.nodes[name]
        _run("tc", "qdisc", "del", "dev", node.host_veth, "root", check=False)
        node.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)

    def reachable(self, name: str, host: str, port: int, timeout: float = 3) -> bool:
        """Can a process in node `name` open a TCP connection to host:port?"""
        code = (
            "import socket,sys\n"
            f"socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
        )
        r = subprocess.run(
            [*self.nodes[name].wrap, sys.executable, "-c", code],
            capture_output=True,
            timeout=timeout + 20,
        )
        return r.returncode == 0


@contextlib.contextmanager
def broker_lock(exclusive: bool) -> Iterator[None]:
    """A machine-wide lock around the shared RabbitMQ: tests that restart it take it
    exclusively, the namespace clusters take it shared, so two test runs on one
    machine (a developer's and CI's) never restart the broker under each other."""
    import fcntl

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / "broker.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _free_subnet() -> int:
    used = (
        _ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout
    )
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for b in candidates:
        if f"10.231.{b}." not in used:
            return b
    raise RuntimeError("no free 10.231.B.0/24 left on this machine")


def sweep_stale() -> list[str]:
    """Remove labs whose creating process is dead (a test run killed mid-way)."""
    removed: list[str] = []
    if not STATE_DIR.is_dir():
        return removed
    live_tags = set()
    for pidfile in STATE_DIR.glob("*.pid"):
        try:
            os.kill(int(pidfile.read_text()), 0)
            live_tags.add(pidfile.stem)
        except (ProcessLookupError, ValueError):
            pass
        except PermissionError:
            live_tags.add(pidfile.stem)
    stale = {p.stem for p in STATE_DIR.glob("*.pid")} - live_tags
    if not stale:
        return removed
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        m = _NS_RE.match(ns)
        if m and m.group(1) in stale:
            # Services a killed run left inside its namespace go with it.
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    for tag in stale:
        for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
            dev = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if dev == f"fbr-{tag}" or dev.startswith(f"fv{tag}n"):
                _ip("link", "del", dev, check=False)
                removed.append(dev)
        with contextlib.suppress(OSError):
            (STATE_DIR / f"{tag}.pid").unlink()
    return removed


# -- the forwarder process --------------------------------------------------------------


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve_forward(listen: str, targets: dict[str, tuple[str, int]]) -> None:
    async def relay(
        target: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        try:
            await asyncio.gather(_pump(reader, up_w), _pump(up_r, writer))
        finally:
            for w in (writer, up_w):
                w.close()

    servers = {}
    for name, target in targets.items():
        servers[name] = await asyncio.start_server(
            lambda r, w, t=target: relay(t, r, w), listen, 0, reuse_address=True
        )
    ports = {n: s.sockets[0].getsockname()[1] for n, s in servers.items()}
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    while not stop.is_set():  # and never outlive the test run that started us
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if os.getppid() != parent:
            break
    for s in servers.values():
        s.close()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "forward":
        targets = {}
        for spec in argv[2:]:
            name, _, hostport = spec.partition("=")
            host, _, port = hostport.rpartition(":")
            targets[name] = (host, int(port))
        asyncio.run(_serve_forward(argv[1], targets))
        return 0
    if argv[:1] == ["sweep"]:
        print("\n".join(sweep_stale()))
        return 0
    print(
        "usage: python -m tests.support.netns forward LISTEN_IP NAME=HOST:PORT... | sweep",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
