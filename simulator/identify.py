"""Discord's two identify limits, as small pure classes with an injectable clock.

- :class:`IdentifyLimiter`: at most one IDENTIFY per bucket (``shard_id % max_concurrency``) per
  window (5 s on Discord). An IDENTIFY that comes too early is refused and does not use the window.
- :class:`SessionStartBudget`: the daily budget (``session_start_limit.total``, 1000 on Discord),
  counted over all shards; RESUME does not count. The 24 h period starts with the first IDENTIFY.
  What an exhausted budget does (every session ends, the token is reset) is the gateway's part.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ("IdentifyLimiter", "SessionStartBudget", "Clock")

Clock = Callable[[], float]

DAY_S = 86_400.0


class IdentifyLimiter:
    """One IDENTIFY per bucket per window.

    Parameters
    ----------
    max_concurrency:
        Number of buckets; a shard's bucket is ``shard_id % max_concurrency``.
    window:
        Seconds between two IDENTIFYs of one bucket.
    clock:
        Monotonic seconds; injectable for tests.
    """

    __slots__ = ("max_concurrency", "window", "_clock", "_last")

    def __init__(self, max_concurrency: int, window: float, clock: Clock = time.monotonic) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if window < 0:
            raise ValueError("window must be >= 0")
        self.max_concurrency = max_concurrency
        self.window = window
        self._clock = clock
        self._last: dict[int, float] = {}

    def bucket(self, shard_id: int) -> int:
        return shard_id % self.max_concurrency

    def try_acquire(self, shard_id: int) -> bool:
        """Take the bucket's window for an IDENTIFY of ``shard_id``; False when it is still taken."""
        key = shard_id % self.max_concurrency
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            return False
        self._last[key] = now
        return True

    def retry_after(self, shard_id: int) -> float:
        """Seconds until ``shard_id``'s bucket accepts an IDENTIFY again (0 when it does now)."""
        last = self._last.get(shard_id % self.max_concurrency)
        if last is None:
            return 0.0
        return max(0.0, self.window - (self._clock() - last))


class SessionStartBudget:
    """The daily IDENTIFY budget of ``session_start_limit``.

    Parameters
    ----------
    total:
        IDENTIFYs allowed per period.
    period:
        Seconds per period (24 h on Discord); it starts with the first IDENTIFY.
    clock:
        Monotonic seconds; injectable for tests.
    """

    __slots__ = ("total", "period", "_clock", "_used", "_started")

    def __init__(self, total: int, period: float = DAY_S, clock: Clock = time.monotonic) -> None:
        if total < 1:
            raise ValueError("total must be >= 1")
        self.total = total
        self.period = period
        self._clock = clock
        self._used = 0
        self._started: float | None = None

    def _roll(self) -> None:
        if self._started is not None and self._clock() - self._started >= self.period:
            self._started = None
            self._used = 0

    def remaining(self) -> int:
        self._roll()
        return self.total - self._used

    def reset_after_ms(self) -> int:
        """Milliseconds until the budget is full again (a full period when nothing was used)."""
        self._roll()
        if self._started is None:
            return int(self.period * 1000)
        return max(0, int((self.period - (self._clock() - self._started)) * 1000))

    def set_remaining(self, remaining: int | None = None) -> None:
        """Refill the budget (``None``: a fresh period), or leave ``remaining`` IDENTIFYs in the current one."""
        if remaining is None or remaining >= self.total:
            self._used = 0
            self._started = None
            return
        if remaining < 0:
            raise ValueError("remaining must be >= 0")
        self._roll()
        self._used = self.total - remaining
        if self._started is None:
            self._started = self._clock()

    def try_use(self) -> bool:
        """Use one IDENTIFY; False when the budget is exhausted."""
        self._roll()
        if self._used >= self.total:
            return False
        if self._started is None:
            self._started = self._clock()
        self._used += 1
        return True
