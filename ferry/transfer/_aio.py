"""Small asyncio helpers shared by the client and the server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in the default executor, cancellation-safe.

    A thread cannot be interrupted, so on cancellation we still wait for it to
    return before propagating: otherwise cleanup code could close or unlink a
    file while a worker thread is still writing through its descriptor (and a
    reused descriptor number would then receive stray data).
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # We are cancelled anyway; the worker's own error, if any, is moot.
        with contextlib.suppress(Exception):
            await future
        raise
