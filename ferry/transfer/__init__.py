"""Data plane: move a VM's disk files between compute hosts over TCP.

Sparse (only allocated, non-zero data is sent; holes stay holes), authorised
(single-use per-migration tokens, see :mod:`.tokens`) and verified (per-frame
checksums plus a layout-independent digest per file, see :mod:`.digest`).

Typical use::

    # destination host, at service start
    registry = TokenRegistry()
    server = TransferServer(data_plane_ip, port, registry)
    await server.start()

    # conductor -> destination (RPC): registry.expect(TransferGrant(...))
    # conductor -> source (RPC):
    result = await send_files(server.address, token, migration_uuid, src_dir, names)

Modules: ``extents`` (where the data is), ``digest`` (what the data is),
``tokens`` (who may send), ``protocol`` (wire format), ``sink`` (one file
being received), ``server`` and ``client`` (the two ends).
"""

from .client import FileResult, TransferResult, send_files
from .digest import SparseDigest, sparse_digest
from .errors import ProtocolError, TransferError, TransferRefused
from .extents import allocated_bytes, data_extents
from .protocol import check_file_name
from .server import TransferServer
from .tokens import TokenRegistry, TransferGrant, new_token

__all__ = [
    "FileResult",
    "ProtocolError",
    "SparseDigest",
    "TokenRegistry",
    "TransferError",
    "TransferGrant",
    "TransferRefused",
    "TransferResult",
    "TransferServer",
    "allocated_bytes",
    "check_file_name",
    "data_extents",
    "new_token",
    "send_files",
    "sparse_digest",
]
