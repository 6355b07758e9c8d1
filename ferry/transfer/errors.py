"""Exceptions raised by the data plane.

``TransferError`` is the base class: catch it to handle any data-plane
failure.  ``TransferRefused`` means a party *decided* not to go on (bad token,
bad name, digest mismatch, destination full, ...), as opposed to the network
failing underneath us; it carries the human readable ``reason`` that the
receiver sends back on the wire.  ``TransientTransferError`` marks failures
that a retry may cure (connection lost or refused, timeouts, a receiver busy
with an older attempt): :func:`ferry.transfer.send_files` retries those with
backoff and resumes; everything else fails at once.

To add a new failure kind, subclass one of these so existing handlers keep
working, and decide whether it is transient.
"""

from __future__ import annotations


class TransferError(Exception):
    """A transfer failed (I/O, connection, protocol or refusal)."""


class TransientTransferError(TransferError):
    """A failure worth retrying: the transfer resumes where it stopped."""


class TransferRefused(TransferError):
    """A transfer was refused by policy or verification; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransferBusy(TransferRefused, TransientTransferError):
    """The receiver refused for now (e.g. still closing an older attempt)."""


class ProtocolError(TransferRefused):
    """The peer sent something that does not follow the wire format."""
