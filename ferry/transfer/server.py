"""Transfer endpoint: receives migrations' files on the destination host.

Each compute host runs one :class:`TransferServer` on its data-plane
address.  The event loop only accepts connections; each connection is
served by its own thread with a blocking socket (:mod:`.receiver`; see
:mod:`.wire` for why threads).  The server owns what connections share:

* the table of live :class:`~ferry.transfer.session.Session` objects, one
  per grant: a new control connection for a grant supersedes the older
  attempt (that is how a resumed transfer takes over from a dead one), and
  two grants may not write the same files at once;
* the per-host receive limit (:class:`~ferry.transfer.ratelimit.TokenBucket`);
* clean-up of partial files: removed when their grant is revoked
  (``registry.revoke``) or expires, and on ``stop()`` unless the registry is
  persistent, in which case they are kept for a restarted server to resume.

To add per-host policy (quotas, admission), hook into :meth:`start_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading

from . import receiver
from .errors import ProtocolError, TransferBusy, TransferRefused
from .protocol import MAX_SEGMENT, Hello
from .ratelimit import TokenBucket
from .session import Session
from .sink import discard_partials
from .tokens import TokenRegistry, TransferGrant, token_key

log = logging.getLogger(__name__)

# How long a new attempt waits for the previous attempt's threads to let go.
_TAKEOVER_SECONDS = 10.0


class TransferServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: TokenRegistry,
        *,
        idle_timeout: float = 120.0,
        header_timeout: float = 10.0,
        file_mode: int = 0o600,
        ssl_context: ssl.SSLContext | None = None,
        rate_limit: float | None = None,
        max_connections: int = 64,
        keep_partials: bool | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        self.host = host
        self.registry = registry
        # A silent peer must not pin partial files (and a session) forever.
        self.idle_timeout = idle_timeout
        # Unauthenticated connections get much less patience than transfers.
        self.header_timeout = header_timeout
        self.file_mode = file_mode
        self.ssl_context = ssl_context
        self.limiter = TokenBucket(rate_limit)  # per host: shared by all transfers
        self.max_connections = max_connections
        # Partials are only worth keeping if a restarted server can know their grant.
        self.keep_partials = registry.path is not None if keep_partials is None else keep_partials
        self.sweep_interval = sweep_interval
        self.stopping = False
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = threading.Lock()
        self._sessions: dict[bytes, Session] = {}
        self._threads: dict[threading.Thread, socket.socket] = {}
        registry.on_revoke(self._revoked)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("transfer server already started")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self._requested_port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # A restarted agent must get its port back while old connections linger.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self.stopping = False
        await asyncio.to_thread(self._sweep)
        self._tasks = [
            asyncio.create_task(self._accept_loop(sock)),
            asyncio.create_task(self._sweep_loop()),
        ]
        log.info("transfer endpoint listening on %s:%d", self.host, self.port)

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("transfer server not started")
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def set_rate_limit(self, rate: float | None) -> None:
        """Change the per-host receive limit (bytes/s; None = unlimited)."""
        self.limiter.set_rate(rate)

    async def stop(self) -> None:
        """Stop listening and end transfers in progress (partials kept for a resume
        when the registry is persistent, removed otherwise)."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        listener.close()
        outcome = "transient" if self.keep_partials else "failed"
        with self._lock:
            sessions = list(self._sessions.values())
            threads = list(self._threads.items())
        for session in sessions:
            session.end(outcome, "transfer endpoint stopped", linger=False)
        for _, sock in threads:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread still in its handshake
        for thread, _ in threads:
            await asyncio.to_thread(thread.join)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, peer = await loop.sock_accept(listener)
            with self._lock:
                busy = len(self._threads) >= self.max_connections
            if busy:
                log.warning("transfer endpoint: too many connections, refusing %s", peer)
                conn.close()
                continue
            thread = threading.Thread(
                target=self._serve,
                args=(conn, peer),
                daemon=True,
                name=f"ferry-recv-{peer[0]}:{peer[1]}",
            )
            with self._lock:
                self._threads[thread] = conn
            thread.start()

    def _serve(self, conn: socket.socket, peer: object) -> None:
        try:
            receiver.serve(self, conn, peer)
        finally:
            with self._lock:
                self._threads.pop(threading.current_thread(), None)

    def track(self, sock: socket.socket) -> None:
        """Record the socket the calling connection thread now uses (after TLS wrap)."""
        with self._lock:
            self._threads[threading.current_thread()] = sock

    # -- sessions ----------------------------------------------------------------

    def start_session(self, grant: TransferGrant, hello: Hello) -> Session:
        """A new attempt for ``grant``: supersede the older one, open or resume the files."""
        _check_manifest(hello, grant)
        key = token_key(hello.token)
        paths = {grant.directory / f.name for f in hello.files}
        with self._lock:
            old = self._sessions.get(key)
            others = [s for k, s in self._sessions.items() if k != key and s.paths & paths]
        for other in others:
            # Another grant's transfer of the same files: wait if it is only
            # finishing (its outcome is decided), refuse if it is running.
            if other.outcome is None or not other.wait_closed(_TAKEOVER_SECONDS):
                raise TransferRefused("these files are being received by another transfer")
        if old is not None and old.committed:
            # The old attempt succeeded and is delivering its verdict; the
            # token is burnt right after that (or the files put back as
            # partials if the verdict could not be sent).  Let it decide
            # rather than supersede a finished transfer.
            old.wait_closed(_TAKEOVER_SECONDS)
            self.registry.open(hello.token, hello.migration_uuid)  # refuses a burnt token
        if old is not None:
            # A new attempt of the same migration: the old one is dead or dying.
            old.end("transient", "superseded by a newer attempt", linger=False)
            if not old.wait_closed(_TAKEOVER_SECONDS):
                raise TransferBusy("still closing the previous attempt of this transfer")
        session = Session(grant, hello.token, hello, self.file_mode)
        session.open()
        with self._lock:
            if self.stopping:
                session.end("transient", "transfer endpoint stopped")
                raise TransferBusy("transfer endpoint is stopping")
            self._sessions[key] = session
            for k in [k for k, s in self._sessions.items() if s.closed]:
                del self._sessions[k]  # keeps the table as small as the live transfers
        return session

    def join_session(self, hello: Hello) -> Session:
        with self._lock:
            session = self._sessions.get(token_key(hello.token))
        if session is None or session.id != hello.session or session.outcome is not None:
            raise TransferBusy("no such transfer session (it ended); retry")
        return session

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            await asyncio.to_thread(self._sweep)

    def _sweep(self) -> None:
        # Partials of grants that expired will never be resumed (a new
        # connection would be refused).  A transfer still running past its
        # expiry is left to finish: expiry gates connections, not bytes.
        with self._lock:
            running = {s.grant.migration_uuid for s in self._sessions.values() if s.outcome is None}
        for grant in self.registry.expired():
            if grant.migration_uuid not in running:
                discard_partials(grant.directory, list(grant.files))

    def _revoked(self, grant: TransferGrant) -> None:
        with self._lock:
            doomed = [
                s for s in self._sessions.values() if s.grant.migration_uuid == grant.migration_uuid
            ]
        for session in doomed:
            session.revoke()
        if not doomed:
            discard_partials(grant.directory, list(grant.files))


def _check_manifest(hello: Hello, grant: TransferGrant) -> None:
    # Exact match: a missing disk must fail loudly here, not at boot time.
    offered = {f.name: f.size for f in hello.files}
    unexpected = sorted(set(offered) - set(grant.files))
    if unexpected:
        raise TransferRefused(f"files not in the grant: {unexpected}")
    missing = sorted(set(grant.files) - set(offered))
    if missing:
        raise TransferRefused(f"granted files missing from the manifest: {missing}")
    for name, size in offered.items():
        if grant.files[name] != size:
            raise TransferRefused(
                f"{name!r}: size {size} does not match the granted size {grant.files[name]}"
            )
    if hello.chunk_size > MAX_SEGMENT:
        raise ProtocolError("chunk size too large")
