"""Per-migration transfer authorisation.

The conductor creates a token with :func:`new_token`, registers a
:class:`TransferGrant` on the destination host (``TokenRegistry.expect``, via
RPC) and hands the same token to the source host, which presents it in the
transfer header.  A grant says where files land and which files (names and
logical sizes) are expected; the receiver refuses anything else.

Tokens are single use: a known token is burnt by the first connection that
presents it for the right migration, whatever the outcome, so a retry needs a
new grant.  Used and expired grants are kept for ``retention`` seconds after
expiry only so refusals can say "already used"/"expired" rather than
"unknown".  Tokens are looked up by their SHA-256 and then compared with
``hmac.compare_digest`` so lookup time does not reveal token prefixes.

The registry is in memory: a restarted destination forgets its grants and
the conductor must issue new ones.  To persist grants or share them between
processes, implement the same three methods over another store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    used: bool = False


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class TokenRegistry:
    """Thread-safe in-memory registry of expected transfers."""

    clock: Callable[[], float] = time.time
    retention: float = 3600.0
    _entries: dict[bytes, _Entry] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def expect(self, grant: TransferGrant) -> None:
        """Register ``grant``; its token becomes usable once."""
        key = _key(grant.token)
        with self._lock:
            self._purge()
            if key in self._entries:
                raise ValueError("token already registered")
            self._entries[key] = _Entry(grant)

    def consume(self, token: str, migration_uuid: str) -> TransferGrant:
        """Burn ``token`` and return its grant, or raise TransferRefused."""
        with self._lock:
            self._purge()
            entry = self._entries.get(_key(token))
            if entry is None or not hmac.compare_digest(
                entry.grant.token.encode("utf-8", "surrogatepass"),
                token.encode("utf-8", "surrogatepass"),
            ):
                raise TransferRefused("unknown transfer token")
            grant = entry.grant
            # A mismatch does not burn the token: the legitimate transfer for
            # the grant's own migration must still be able to use it.
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
            entry.used = True
            return grant

    def revoke(self, migration_uuid: str) -> int:
        """Forget every grant of ``migration_uuid``; returns how many were dropped."""
        with self._lock:
            doomed = [
                key
                for key, entry in self._entries.items()
                if entry.grant.migration_uuid == migration_uuid
            ]
            for key in doomed:
                del self._entries[key]
            return len(doomed)

    def pending(self) -> list[TransferGrant]:
        """Unused, unexpired grants (for diagnostics)."""
        now = self.clock()
        with self._lock:
            return [
                e.grant for e in self._entries.values() if not e.used and now < e.grant.expires_at
            ]

    def _purge(self) -> None:
        # Called with the lock held; keeps the registry bounded.
        horizon = self.clock() - self.retention
        for key in [k for k, e in self._entries.items() if e.grant.expires_at < horizon]:
            del self._entries[key]
