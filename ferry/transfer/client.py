"""Sending side: :func:`send_files` moves a migration's files to a destination endpoint.

It opens the files once, then runs attempts (:class:`~ferry.transfer.sender.Attempt`,
in a dedicated thread) until one succeeds.  A transient failure (connection
refused, reset or cut, timeout, receiver busy or restarted) is retried after
an exponential backoff with jitter, up to ``attempts`` tries or ``deadline``
seconds, and each retry *resumes*: the receiver reports the segments it
holds verified and only the others are sent again.  A refusal (bad token,
digest mismatch, destination full, ...) fails at once.

Progress: ``progress(done, total)`` (the v1 callback) and, if given,
``on_progress(Progress)`` with rate and ETA, are called on the event loop
at least every ``progress_interval`` seconds and once at the end.

To change what is sent, see :mod:`.segments`; how it is sent, :mod:`.sender`;
the retry policy lives in :func:`_backoff` and :func:`_retryable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._aio import run_blocking, run_in_thread
from .errors import TransferError, TransientTransferError
from .progress import Counters, Meter, Progress
from .protocol import check_chunk_size, check_file_name
from .ratelimit import HOST_LIMITER, TokenBucket
from .segments import Source, open_source
from .sender import Attempt, SendOptions

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4 * 1024 * 1024
DEFAULT_STREAMS = 2
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class FileResult:
    size: int  # logical size
    allocated_bytes: int  # bytes in data extents on the source
    digest: str  # layout-independent digest, verified by the receiver
    bytes: int = 0  # non-zero payload bytes the destination holds


@dataclass(frozen=True)
class TransferResult:
    bytes_sent: int  # chunk payload bytes put on the wire, all attempts (after compression)
    files: dict[str, FileResult]
    seconds: float
    wire_bytes: int = 0  # everything handed to the sockets, framing included
    attempts: int = 1
    resumed_bytes: int = 0  # allocated bytes found already verified on the receiver
    chunks: int = 0
    chunks_compressed: int = 0
    chunks_resent: int = 0  # re-sent after a checksum mismatch on arrival


async def send_files(
    address: tuple[str, int],
    token: str,
    migration_uuid: str,
    directory: Path,
    names: list[str],
    progress: ProgressFn | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    *,
    streams: int = DEFAULT_STREAMS,
    compress: bool = False,
    rate_limit: float | None = None,
    host_limiter: TokenBucket | None = HOST_LIMITER,
    ssl_context: ssl.SSLContext | None = None,
    attempts: int = 6,
    deadline: float | None = None,
    backoff: float = 0.5,
    max_backoff: float = 10.0,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 0.5,
    connect_timeout: float = 30.0,
    idle_timeout: float = 600.0,
) -> TransferResult:
    """Send ``directory/<name>`` for each name; raise TransferError on failure.

    ``rate_limit`` caps this migration (bytes/s), ``host_limiter`` is shared
    by every transfer of the process (see :func:`set_host_rate_limit`).
    ``deadline`` bounds the whole call including retries (seconds); after
    it the last error is raised (the conductor then rolls back).
    """
    check_chunk_size(chunk_size)
    if not 1 <= streams <= 16:
        raise ValueError("streams must be 1..16")
    for name in names:
        check_file_name(name)
    if len(set(names)) != len(names):
        raise ValueError("duplicate file names")
    started = time.monotonic()
    limit_at = started + deadline if deadline is not None else None
    limiters = [b for b in (TokenBucket(rate_limit) if rate_limit else None, host_limiter) if b]
    opts = SendOptions(
        streams=streams,
        chunk_size=chunk_size,
        compress=compress,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        ssl_context=ssl_context,
        limiters=limiters,
    )
    sources: list[Source] = []
    try:
        for i, name in enumerate(names):
            sources.append(await run_blocking(open_source, directory, name, i))
        counters = Counters({s.name: s.allocated for s in sources})
        meter = Meter(counters)
        reporter = asyncio.create_task(_report(meter, progress, on_progress, progress_interval))
        try:
            verdict = await _attempts(
                address,
                token,
                migration_uuid,
                sources,
                opts,
                counters,
                attempts,
                limit_at,
                backoff,
                max_backoff,
            )
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        _emit(meter, progress, on_progress)  # the final 100 %
    finally:
        for src in sources:
            os.close(src.fd)
    files = {s.name: FileResult(s.size, s.allocated, *verdict[s.name]) for s in sources}
    return TransferResult(
        bytes_sent=counters.payload_sent,
        files=files,
        seconds=time.monotonic() - started,
        wire_bytes=counters.wire_sent,
        attempts=counters.attempt,
        resumed_bytes=counters.skipped,
        chunks=counters.chunks_sent,
        chunks_compressed=counters.chunks_compressed,
        chunks_resent=counters.chunks_resent,
    )


async def _attempts(
    address: tuple[str, int],
    token: str,
    migration_uuid: str,
    sources: list[Source],
    opts: SendOptions,
    counters: Counters,
    attempts: int,
    limit_at: float | None,
    backoff: float,
    max_backoff: float,
) -> dict[str, tuple[str, int]]:
    where = f"{address[0]}:{address[1]}"
    for n in range(1, max(1, attempts) + 1):
        counters.new_attempt()
        attempt = Attempt(address, token, migration_uuid, sources, opts, counters)
        try:
            return await run_in_thread(attempt.run, attempt.abort, f"ferry-transfer-{where}")
        except TransferError as exc:
            delay = _backoff(n, backoff, max_backoff)
            out_of_time = limit_at is not None and time.monotonic() + delay >= limit_at
            if not _retryable(exc) or n >= attempts or out_of_time:
                raise _with_context(exc, where) from exc
            log.warning(
                "transfer to %s, attempt %d failed (%s); resuming in %.1fs", where, n, exc, delay
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientTransferError)


def _backoff(attempt: int, base: float, cap: float) -> float:
    # Exponential with full jitter, so hosts retrying together spread out.
    return random.uniform(0.5, 1.0) * min(cap, base * 2 ** (attempt - 1))


def _with_context(exc: TransferError, where: str) -> TransferError:
    if isinstance(exc, TransientTransferError) and where not in str(exc):
        new = type(exc)(f"transfer to {where} failed: {exc}")
        return new
    return exc


async def _report(
    meter: Meter,
    progress: ProgressFn | None,
    on_progress: Callable[[Progress], None] | None,
    interval: float,
) -> None:
    while True:
        await asyncio.sleep(interval)
        _emit(meter, progress, on_progress)


def _emit(
    meter: Meter, progress: ProgressFn | None, on_progress: Callable[[Progress], None] | None
) -> None:
    snap = meter.snapshot()
    # A failing callback must not kill the transfer it reports on.
    try:
        if progress is not None:
            progress(snap.done, snap.total)
        if on_progress is not None:
            on_progress(snap)
    except Exception:
        log.exception("progress callback failed")
