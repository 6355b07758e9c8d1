"""Small asyncio helpers shared by the client and the server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


async def run_in_thread(fn: Callable[[], T], on_cancel: Callable[[], None], name: str) -> T:
    """Run ``fn`` in a dedicated thread (long transfers must not starve the
    default executor); on cancellation call ``on_cancel`` (which must make
    ``fn`` return soon, e.g. by shutting its sockets) and wait for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: object) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)  # type: ignore[arg-type]
        else:
            assert isinstance(value, BaseException)
            future.set_exception(value)

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:  # delivered to the awaiting coroutine
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=body, name=name, daemon=True).start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        on_cancel()
        with contextlib.suppress(BaseException):
            await future
        raise
