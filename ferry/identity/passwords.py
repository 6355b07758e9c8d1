"""Slow salted password hashing with the standard library's scrypt.

The parameters are stored in each hash ("scrypt$n$r$p$salt$hash"), so raising
the cost later only needs a new `N_LOG2`; old hashes keep verifying. `verify`
compares in constant time, and `burn` spends the same effort when there is no
user to check against, so timing does not reveal whether a user exists.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

N_LOG2 = 15  # 2**15 * 128 * r bytes = 32 MiB and tens of ms per check: slow on purpose
R, P, DKLEN = 8, 1, 32
_MAXMEM = 128 * 1024 * 1024


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=_MAXMEM)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    n = 1 << N_LOG2
    digest = _scrypt(password, salt, n, R, P, DKLEN)
    return f"scrypt${n}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@functools.cache
def _dummy() -> str:
    return hash_password(secrets.token_urlsafe(16))


def burn(password: str) -> None:
    """Spend what a real check costs (unknown or disabled user)."""
    verify(_dummy(), password)
