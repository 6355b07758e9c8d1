"""Optional per-chunk zstd compression that turns itself off when it does not pay.

Each sender stream owns a :class:`Compressor`.  A chunk is compressed only
if the policy says it is worth *trying*; the result is used only if it is at
most ``RATIO`` (0.9) of the raw size, otherwise the raw bytes go out.  After
``GIVE_UP`` consecutive chunks that did not compress, the stream stops
trying for a while (16 chunks, doubling up to 1024) and then samples again,
so random or encrypted data costs one trial every now and then, not a
compression pass per chunk, while compressible regions later in the disk
are still found.  The receiver decompresses into a bounded buffer
(``max_output_size``), so a hostile peer cannot make it allocate more than a
segment.

``zstandard`` is an optional dependency: without it :data:`AVAILABLE` is
False, the sender does not offer compression and the receiver declines it.
To add another codec, give it a flag bit in :mod:`.protocol` and a branch in
:func:`decompress`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

zstandard: ModuleType | None
try:
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the extra
    zstandard = None

AVAILABLE = zstandard is not None
RATIO = 0.9
GIVE_UP = 3
_FIRST_PAUSE = 16
_MAX_PAUSE = 1024


class Compressor:
    def __init__(self, level: int = 1) -> None:
        if zstandard is None:
            raise RuntimeError("zstandard is not installed")
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._misses = 0
        self._pause = _FIRST_PAUSE
        self._skip = 0
        self.tried = 0
        self.used = 0

    def compress(self, pieces: Sequence[memoryview], raw_len: int) -> bytes | None:
        """The compressed payload, or None when raw bytes should be sent."""
        if self._skip > 0:
            self._skip -= 1
            return None
        self.tried += 1
        cobj = self._cctx.compressobj(size=raw_len)
        out = b"".join([cobj.compress(p) for p in pieces]) + cobj.flush()
        if len(out) <= raw_len * RATIO:
            self.used += 1
            self._misses = 0
            self._pause = _FIRST_PAUSE
            return out
        self._misses += 1
        if self._misses >= GIVE_UP:
            self._misses = 0
            self._skip = self._pause
            self._pause = min(self._pause * 2, _MAX_PAUSE)
        return None


def decompress(payload: memoryview, raw_len: int) -> bytes:
    """Decompress one chunk; ValueError if it is corrupt or not ``raw_len`` long."""
    if zstandard is None:
        raise ValueError("compressed chunk but zstandard is not installed")
    try:
        out = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt compressed chunk: {exc}") from None
    if len(out) != raw_len:
        raise ValueError("compressed chunk has the wrong length")
    return out
