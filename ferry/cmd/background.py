"""Run an EmbeddedCloud on its own event loop in a thread (for `ferry demo`)."""

from __future__ import annotations

import asyncio
import threading

from ferry.cmd.embedded import CloudConfig, EmbeddedCloud


class CloudThread:
    def __init__(self, cfg: CloudConfig) -> None:
        self.cfg = cfg
        self.cloud: EmbeddedCloud | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ferry-cloud", daemon=True)
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.cloud = EmbeddedCloud(self.cfg)
            await self.cloud.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.cloud.stop()

    def start(self, timeout: float = 120) -> EmbeddedCloud:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the embedded cloud did not start in time")
        if self._error is not None:
            raise self._error
        assert self.cloud is not None
        return self.cloud

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=120)
