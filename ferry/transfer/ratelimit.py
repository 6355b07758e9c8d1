"""Bandwidth limits: a thread-safe token bucket.

Every chunk's bytes are taken from each bucket that applies before the
chunk goes on the wire (sender) or is read off it (receiver):

* per migration: a bucket made for one ``send_files`` call
  (``rate_limit=``), or from the grant's ``rate_limit`` on the receiver;
* per host: :data:`HOST_LIMITER` shared by every transfer this process
  sends (set it with :func:`set_host_rate_limit`), and the one owned by a
  :class:`~ferry.transfer.server.TransferServer` for what it receives.

The bucket may go into debt (a 4 MiB chunk through a 1 MiB burst): the taker
then sleeps until the debt is paid, so the long-run rate is exact and the
burst stays small (``burst`` seconds worth of bytes, 20 ms by default).  A
bucket with ``rate=None`` is unlimited and costs one attribute check.
To add another limit (per link, per datastore), create another bucket and
pass it along; takers simply take from every bucket in turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float | None = None,
        burst: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self.rate: float | None = None
        self._tokens = 0.0
        self._stamp = clock()
        self.set_rate(rate)

    def set_rate(self, rate: float | None) -> None:
        """Change the rate (bytes/s; None or 0 = unlimited) for future takes."""
        with self._lock:
            self.rate = float(rate) if rate else None
            self._tokens = self._capacity()
            self._stamp = self._clock()

    def _capacity(self) -> float:
        return self.rate * self._burst if self.rate else 0.0

    def take(self, n: int, cancelled: Callable[[], bool] | None = None) -> None:
        """Block until ``n`` bytes may pass (cancellable between naps)."""
        if self.rate is None or n <= 0:
            return
        with self._lock:
            rate = self.rate
            if rate is None:
                return
            now = self._clock()
            self._tokens = min(self._capacity(), self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        # Sleep outside the lock so other takers can book their share; they
        # queue behind our debt, which keeps the aggregate rate exact.
        deadline = self._clock() + wait
        while wait > 0:
            if cancelled is not None and cancelled():
                return
            self._sleep(min(wait, 0.1))
            wait = deadline - self._clock()


HOST_LIMITER = TokenBucket()


def set_host_rate_limit(rate: float | None) -> None:
    """Cap the total send rate of this process (bytes/s; None = unlimited)."""
    HOST_LIMITER.set_rate(rate)
