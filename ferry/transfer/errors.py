"""Exceptions raised by the data plane.

``TransferError`` is the base class: catch it to handle any data-plane
failure.  ``TransferRefused`` means a party *decided* not to go on (bad token,
bad name, checksum or digest mismatch, ...), as opposed to the network or the
disk failing underneath us; it carries the human readable ``reason`` that the
receiver sends back on the wire.

To add a new failure kind, subclass ``TransferError`` (or ``TransferRefused``
if it is a policy/validation decision) so existing handlers keep working.
"""

from __future__ import annotations


class TransferError(Exception):
    """A transfer failed (I/O, connection, protocol or refusal)."""


class TransferRefused(TransferError):
    """A transfer was refused by policy or verification; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolError(TransferRefused):
    """The peer sent something that does not follow the wire format."""
