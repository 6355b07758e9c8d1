"""Data plane: move a VM's disk files between compute hosts over TCP.

Sparse (only allocated, non-zero 64 KiB blocks travel; holes stay holes),
parallel (several streams share the segments of all files), verified (a sum
per chunk checked before it is written, a layout-independent digest per
file checked before it is renamed into place), resumable (the receiver
journals verified segments next to ``<name>.part``; a retried transfer sends
only what is missing), and controlled (token-bucket rate limits per
migration and per host, optional zstd, optional TLS with a cluster CA).

Typical use::

    # destination host, at service start
    registry = TokenRegistry(path=state_dir / "transfer-grants.json")
    server = TransferServer(data_plane_ip, port, registry)
    await server.start()

    # conductor -> destination (RPC): registry.expect(TransferGrant(...))
    # conductor -> source (RPC):
    result = await send_files(server.address, token, migration_uuid, src_dir, names,
                              progress, on_progress=publish)

Modules, one concept each: ``extents`` (where the data is), ``digest`` (what
the data is), ``segments`` (how a file is cut and read), ``tokens`` (who may
send), ``protocol`` (wire format), ``wire`` (frames on a socket), ``journal``
and ``sink`` (one file being received), ``session`` (one attempt on the
receiver), ``server`` and ``sender``/``client`` (the two ends), ``progress``,
``ratelimit``, ``codec`` (zstd) and ``tls``.
"""

from .client import DEFAULT_CHUNK, DEFAULT_STREAMS, FileResult, TransferResult, send_files
from .digest import SparseDigest, file_digest, sparse_digest
from .errors import (
    ProtocolError,
    TransferBusy,
    TransferError,
    TransferRefused,
    TransientTransferError,
)
from .extents import allocated_bytes, data_extents
from .progress import FileProgress, Progress
from .protocol import check_file_name
from .ratelimit import HOST_LIMITER, TokenBucket, set_host_rate_limit
from .server import TransferServer
from .tokens import TokenRegistry, TransferGrant, new_token

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_STREAMS",
    "HOST_LIMITER",
    "FileProgress",
    "FileResult",
    "Progress",
    "ProtocolError",
    "SparseDigest",
    "TokenBucket",
    "TokenRegistry",
    "TransferBusy",
    "TransferError",
    "TransferGrant",
    "TransferRefused",
    "TransferResult",
    "TransferServer",
    "TransientTransferError",
    "allocated_bytes",
    "check_file_name",
    "data_extents",
    "file_digest",
    "new_token",
    "send_files",
    "set_host_rate_limit",
    "sparse_digest",
]
