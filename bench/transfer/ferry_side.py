"""One side of a Ferry transfer in its own process, so the benchmark can
measure each side's CPU time and peak memory separately (``wait4``).

    python -m bench.transfer.ferry_side recv DIR NAME=SIZE[,NAME=SIZE] PORTFILE
    python -m bench.transfer.ferry_side send HOST:PORT DIR NAME[,NAME] [--streams N] ...

The token and migration id come from the environment (``FERRY_TOKEN``,
``FERRY_MIGRATION``).  The receiver writes its port to PORTFILE once it
listens and exits when the grant has been used (the transfer committed).
The sender prints its :class:`~ferry.transfer.TransferResult` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from ferry.transfer import TokenRegistry, TransferGrant, TransferServer, send_files


async def receive(directory: Path, files: dict[str, int], port_file: Path, state: Path) -> None:
    registry = TokenRegistry(path=state)
    token = os.environ["FERRY_TOKEN"]
    if not registry.pending():
        registry.expect(
            TransferGrant(
                token, os.environ["FERRY_MIGRATION"], directory, files, time.time() + 3600
            )
        )
    server = TransferServer("127.0.0.1", int(os.environ.get("FERRY_PORT", "0")), registry)
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.port))
    tmp.rename(port_file)
    try:
        # Its exit is not timed (the sender's verdict stops the clock), so
        # poll gently: a 5 ms poll cost ~3 % of a core, counted as the
        # receiver's CPU and taken from the transfer's threads.
        while registry.is_active(token):
            await asyncio.sleep(0.05)
    finally:
        await server.stop()


async def send(address: str, directory: Path, names: list[str], args: argparse.Namespace) -> None:
    host, port = address.rsplit(":", 1)
    result = await send_files(
        (host, int(port)),
        os.environ["FERRY_TOKEN"],
        os.environ["FERRY_MIGRATION"],
        directory,
        names,
        streams=args.streams,
        chunk_size=args.chunk_mib * 1024 * 1024,
        compress=args.compress,
        backoff=0.2,
        attempts=10,
    )
    json.dump(dataclasses.asdict(result), sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("directory", type=Path)
    r.add_argument("files")
    r.add_argument("port_file", type=Path)
    r.add_argument("--state", type=Path, required=True)
    s = sub.add_parser("send")
    s.add_argument("address")
    s.add_argument("directory", type=Path)
    s.add_argument("names")
    s.add_argument("--streams", type=int, default=2)
    s.add_argument("--chunk-mib", type=int, default=4)
    s.add_argument("--compress", action="store_true")
    args = parser.parse_args()
    if args.cmd == "recv":
        files = {k: int(v) for k, v in (item.split("=") for item in args.files.split(","))}
        asyncio.run(receive(args.directory, files, args.port_file, args.state))
    else:
        asyncio.run(send(args.address, args.directory, args.names.split(","), args))


if __name__ == "__main__":
    main()
