"""Reading the test guest's boot markers from its serial console output.

Each boot prints exactly one line::

    GUEST-BOOTED id=<guest id> boot=<n> payload=ok|BAD

where ``n`` counts boots of this disk (1 on the first) and ``payload`` says
whether the on-disk payload still matched its SHA-256.  The console log of a
VM that booted several times holds several markers; kernel messages or
carriage returns may surround them, so the pattern is searched anywhere in a
line.  Keep :data:`MARKER_RE` in sync with the ``say`` call in ``init.sh``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER_RE = re.compile(
    r"GUEST-BOOTED id=(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*) boot=(?P<boot>\d+)"
    r" payload=(?P<payload>ok|BAD)(?![A-Za-z0-9])"
)


@dataclass(frozen=True)
class Marker:
    guest_id: str
    boot: int
    payload_ok: bool


def parse_markers(console_text: str) -> list[Marker]:
    """All markers in ``console_text``, oldest first."""
    return [
        Marker(
            guest_id=match["id"],
            boot=int(match["boot"]),
            payload_ok=match["payload"] == "ok",
        )
        for match in MARKER_RE.finditer(console_text)
    ]


def last_marker(console_text: str) -> Marker | None:
    """The most recent marker, or ``None`` if the guest has not booted yet."""
    markers = parse_markers(console_text)
    return markers[-1] if markers else None
