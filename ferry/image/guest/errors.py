"""Errors raised while building the test guest image.

Everything the builder can fail on is reported as :class:`GuestImageError`
with a message that says what to install or run, so callers (CLI, tests)
only need to catch one type.  Add subclasses here if a caller ever needs to
tell failures apart.
"""

from __future__ import annotations


class GuestImageError(RuntimeError):
    """The guest image could not be built; the message says how to fix it."""
