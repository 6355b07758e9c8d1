"""Per-migration transfer authorisation.

The conductor creates a token with :func:`new_token`, registers a
:class:`TransferGrant` on the destination host (``TokenRegistry.expect``, via
RPC) and hands the same token to the source host, which presents it in the
transfer header.  A grant says where files land and which files (names and
logical sizes) are expected; the receiver refuses anything else.

Lifecycle of a token:

* :meth:`TokenRegistry.open` lets the grant's own migration use it, as many
  times as needed while the transfer is incomplete: a cut transfer resumes
  with the same token.  Presenting it for another migration is refused and
  does not burn it (the legitimate transfer must still work).
* :meth:`TokenRegistry.complete` burns it once the files are in place: a
  completed transfer's token is dead.  :meth:`consume` is ``open`` +
  ``complete`` in one step (the v1 single-use behaviour).
* Expired tokens are refused; used and expired grants are kept for
  ``retention`` seconds after expiry only so refusals can say "already
  used"/"expired" rather than "unknown".

Tokens are looked up by their SHA-256 and compared with
``hmac.compare_digest``.  With ``path`` set the registry persists itself
(atomic JSON rewrite on every change, mode 0600, only token hashes on disk)
and reloads on start, so a restarted destination agent still knows the
grants of transfers it must resume.  To share grants between processes or
hosts, implement the same methods over another store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TransferRefused
from .protocol import check_file_name

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh unguessable token (32 random bytes, URL-safe base64)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class TransferGrant:
    """What the destination agrees to receive for one migration."""

    token: str
    migration_uuid: str
    directory: Path
    files: dict[str, int]  # plain file name -> logical size in bytes
    expires_at: float  # time.time() after which the token is refused
    # Refuse by default to clobber a file that already exists at the
    # destination: an instance directory is expected to be fresh, and silently
    # overwriting a disk is not recoverable.
    replace_existing: bool = False
    # Per-migration bandwidth cap enforced by the receiver (bytes/s), if any.
    rate_limit: float | None = None

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("grant needs a token")
        for name, size in self.files.items():
            check_file_name(name)
            if size < 0:
                raise ValueError(f"negative size for {name!r}")


@dataclass
class _Entry:
    grant: TransferGrant
    key: bytes  # sha256 of the token: a reloaded grant only knows this
    used: bool = False


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class TokenRegistry:
    """Thread-safe registry of expected transfers, optionally persisted at ``path``."""

    clock: Callable[[], float] = time.time
    retention: float = 3600.0
    path: Path | None = None
    _entries: dict[bytes, _Entry] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _on_revoke: list[Callable[[TransferGrant], None]] = field(
        default_factory=list, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.path is not None:
            self._load()

    def expect(self, grant: TransferGrant) -> None:
        """Register ``grant``; its token becomes usable by its migration."""
        key = token_key(grant.token)
        with self._lock:
            self._purge()
            if key in self._entries:
                raise ValueError("token already registered")
            self._entries[key] = _Entry(grant, key)
            self._save()

    def open(self, token: str, migration_uuid: str) -> TransferGrant:
        """Return the grant for a (first or resumed) transfer, or raise TransferRefused."""
        with self._lock:
            self._purge()
            key = token_key(token)
            entry = self._entries.get(key)
            if entry is None or not hmac.compare_digest(key, entry.key):
                raise TransferRefused("unknown transfer token")
            grant = entry.grant
            if grant.migration_uuid != migration_uuid:
                raise TransferRefused(
                    f"transfer token was issued for another migration, not {migration_uuid}"
                )
            if entry.used:
                raise TransferRefused(
                    f"transfer token for migration {migration_uuid} was already used"
                )
            if self.clock() >= grant.expires_at:
                raise TransferRefused(f"transfer token for migration {migration_uuid} expired")
            return grant

    def complete(self, token: str) -> None:
        """Burn the token of a finished transfer (idempotent)."""
        with self._lock:
            entry = self._entries.get(token_key(token))
            if entry is not None and not entry.used:
                entry.used = True
                self._save()

    def consume(self, token: str, migration_uuid: str) -> TransferGrant:
        """Open and burn ``token`` at once (single use)."""
        with self._lock:
            grant = self.open(token, migration_uuid)
            self.complete(token)
            return grant

    def is_active(self, token: str) -> bool:
        """True while the grant exists, is unused and unexpired."""
        with self._lock:
            entry = self._entries.get(token_key(token))
            return entry is not None and not entry.used and self.clock() < entry.grant.expires_at

    def state(self, token: str) -> str | None:
        """"active", "used" (its transfer completed), "expired", or None if unknown.

        Lets the destination treat a re-sent registration of the same token
        (a resumed migration step) as the same grant instead of a new one.
        """
        with self._lock:
            entry = self._entries.get(token_key(token))
            if entry is None:
                return None
            if entry.used:
                return "used"
            return "active" if self.clock() < entry.grant.expires_at else "expired"

    def renew(self, token: str, expires_at: float) -> None:
        """Move an unused grant's expiry to ``expires_at`` (a resumed transfer
        must not be refused because the first attempt started long ago)."""
        with self._lock:
            entry = self._entries.get(token_key(token))
            if entry is None or entry.used:
                raise TransferRefused("no unused grant for this token")
            entry.grant = dataclasses.replace(entry.grant, expires_at=expires_at)
            self._save()

    def revoke(self, migration_uuid: str) -> int:
        """Forget every grant of ``migration_uuid``; returns how many were dropped.

        Listeners (the transfer server) abort the transfers in progress and
        remove their partial files.
        """
        with self._lock:
            doomed = [
                k for k, e in self._entries.items() if e.grant.migration_uuid == migration_uuid
            ]
            grants = [self._entries.pop(k).grant for k in doomed]
            if doomed:
                self._save()
            listeners = list(self._on_revoke)
        for grant in grants:
            for listener in listeners:
                listener(grant)
        return len(doomed)

    def on_revoke(self, listener: Callable[[TransferGrant], None]) -> None:
        with self._lock:
            self._on_revoke.append(listener)

    def pending(self) -> list[TransferGrant]:
        """Unused, unexpired grants (for diagnostics and restart recovery)."""
        now = self.clock()
        with self._lock:
            return [
                e.grant for e in self._entries.values() if not e.used and now < e.grant.expires_at
            ]

    def expired(self) -> list[TransferGrant]:
        """Unused grants past their expiry (their partial files may be removed)."""
        now = self.clock()
        with self._lock:
            return [
                e.grant for e in self._entries.values() if not e.used and now >= e.grant.expires_at
            ]

    def _purge(self) -> None:
        # Called with the lock held; keeps the registry bounded.
        horizon = self.clock() - self.retention
        doomed = [k for k, e in self._entries.items() if e.grant.expires_at < horizon]
        for key in doomed:
            del self._entries[key]
        if doomed:
            self._save()

    # -- persistence -----------------------------------------------------------

    def _save(self) -> None:
        if self.path is None:
            return
        records = [
            {
                "key": key.hex(),
                "migration_uuid": e.grant.migration_uuid,
                "directory": str(e.grant.directory),
                "files": e.grant.files,
                "expires_at": e.grant.expires_at,
                "replace_existing": e.grant.replace_existing,
                "rate_limit": e.grant.rate_limit,
                "used": e.used,
            }
            for key, e in self._entries.items()
        ]
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"version": 1, "grants": records}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def _load(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw: dict[str, Any] = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (ValueError, OSError):
            # A corrupt registry must not stop the host: grants are re-issued
            # by the conductor on retry; keep the bad file for inspection.
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            return
        for rec in raw.get("grants", []):
            key = bytes.fromhex(rec["key"])
            # The token itself is never stored: lookups go by its hash, and the
            # reloaded grant carries a placeholder token.
            grant = TransferGrant(
                token="sha256:" + rec["key"],
                migration_uuid=rec["migration_uuid"],
                directory=Path(rec["directory"]),
                files={str(k): int(v) for k, v in rec["files"].items()},
                expires_at=float(rec["expires_at"]),
                replace_existing=bool(rec.get("replace_existing")),
                rate_limit=rec.get("rate_limit"),
            )
            self._entries[key] = _Entry(grant, key, used=bool(rec.get("used")))
