"""Remembering recent request ids, so a captured request cannot be replayed while its frame is fresh.

A signed frame stays acceptable for ``INNKEEPER_IPC_MAX_AGE`` seconds either side of its send time
(:mod:`ipc.signing`), so someone who can read and publish on Redis could resend a captured request
within that window. The bus remembers each request id it accepted for twice that window and drops
a second copy (reason ``replay``).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ("RecentIds",)


class RecentIds:
    """Ids seen within the last ``ttl_s`` seconds, at most ``max_size`` of them (oldest forgotten first)."""

    __slots__ = ("ttl_s", "max_size", "_clock", "_expiry")

    def __init__(self, ttl_s: float, *, max_size: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._clock = clock
        self._expiry: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_add(self, item: str) -> bool:
        """True when ``item`` was already seen within the window; otherwise remember it and return False."""
        now = self._clock()
        expiry = self._expiry
        while expiry:
            oldest, until = next(iter(expiry.items()))
            if until > now:
                break
            del expiry[oldest]
        if item in expiry:
            return True
        expiry[item] = now + self.ttl_s
        while len(expiry) > self.max_size:
            expiry.popitem(last=False)
        return False
