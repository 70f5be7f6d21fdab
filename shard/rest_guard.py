"""The invalid-request guard of one process: it holds while Redis is down or the shared limiter is off.

Discord bans an IP for a while once it answers 10,000 invalid requests (401, 403, and 429s other
than ``shared``-scope ones) within 10 minutes. The shared limiter's guard (:mod:`ipc.ratelimit`)
counts them bot-wide in Redis, but it steps aside while Redis is unreachable and does not exist
with ``INNKEEPER_SHARED_RATELIMIT=false``. :class:`LocalInvalidGuard` counts the invalid responses
this process received over a sliding window and acts like the shared guard: above ``soft`` it
delays each request (in proportion, up to ``max_delay`` seconds at ``hard``), and from ``hard``
on it refuses requests with :class:`~ipc.ratelimit.RequestRefused` until the count falls.

Where it lives, and when it acts
--------------------------------
``shard/rest_hook.py`` owns it: the hook sees every REST, webhook and interaction response of the
process, whether or not a shared limiter is installed, and classifies them
(:attr:`~ipc.ratelimit_headers.ResponseInfo.counts_as_invalid`). ``ipc/`` is coordination over
Redis and knows nothing of discord.py; the guard needs neither. The guard always counts, so it
has the recent history the moment Redis goes away; it only delays and refuses while no shared
guard is in charge (no limiter, or the limiter has fallen back to local limiting). Interaction
callbacks are never delayed or refused (their responses still count): Discord does not count them
against the global limit, and a callback held back is an interaction the user sees fail.

Thresholds
----------
The processes of one host share its IP, and without Redis none sees the others' counts. So each
gets an equal share of the shared guard's thresholds: ``soft`` and ``hard`` are
``INNKEEPER_GUARD_SOFT`` and ``INNKEEPER_GUARD_HARD`` divided by ``INNKEEPER_GUARD_PROCESSES``
(the launcher sets it to the clusters on the host), see :meth:`LocalInvalidGuard.from_settings`.

The window is kept in slots of ``slot`` seconds (60 slots of 10 s for 10 minutes). A slot leaves
the count only when all of it is older than the window, so the count can run a little high,
never low: unlike an estimate from two fixed windows, a burst just before a window boundary
cannot be half forgotten.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from ipc.ratelimit import GUARD_HARD, GUARD_MAX_DELAY, GUARD_SOFT, GUARD_WINDOW, RequestRefused

if TYPE_CHECKING:
    from innkeeper.settings import Settings

__all__ = ("LocalInvalidGuard",)

_log = logging.getLogger(__name__)

LOCAL_INVALID = Gauge("innkeeper_rest_guard_invalid_requests",
                      "401/403/429 responses this process received in the guard's sliding window")
LOCAL_DELAYED = Counter("innkeeper_rest_guard_delays_total", "Requests the per-process guard delayed")
LOCAL_REFUSED = Counter("innkeeper_rest_guard_refused_total", "Requests the per-process guard refused")


class LocalInvalidGuard:
    """Counts this process's invalid responses in a sliding window; delays and refuses past its thresholds.

    Parameters
    ----------
    soft:
        Above this many invalid responses in the window, requests are delayed.
    hard:
        From this many on, requests are refused.
    window:
        Seconds of the sliding window (Discord's: 600).
    max_delay:
        The delay at ``hard``, in seconds.
    slot:
        Resolution of the window, in seconds.
    clock:
        Monotonic seconds (tests pass a fake).

    Raises
    ------
    ValueError
        Unless ``0 < soft < hard`` and ``0 < slot <= window``.
    """

    __slots__ = ("soft", "hard", "window", "max_delay", "slot", "_clock", "_slots", "_total", "refused",
                 "delayed", "_warned")

    def __init__(self, *, soft: int = GUARD_SOFT, hard: int = GUARD_HARD, window: float = GUARD_WINDOW,
                 max_delay: float = GUARD_MAX_DELAY, slot: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < soft < hard or not 0 < slot <= window:
            raise ValueError("the guard needs 0 < soft < hard and 0 < slot <= window")
        self.soft = soft
        self.hard = hard
        self.window = window
        self.max_delay = max_delay
        self.slot = slot
        self._clock = clock
        self._slots: collections.deque[list[int]] = collections.deque()  # [slot index, count], oldest first
        self._total = 0
        #: Requests refused and delayed since start (also in the metrics).
        self.refused = 0
        self.delayed = 0
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> LocalInvalidGuard:
        """This process's share of the guard's thresholds (``INNKEEPER_GUARD_*``, see the module docstring)."""
        share = max(1, settings.guard_processes)
        hard = max(2, settings.guard_hard // share)
        soft = min(max(1, settings.guard_soft // share), hard - 1)
        return cls(soft=soft, hard=hard, **options)

    def count(self) -> int:
        """Invalid responses in the window now (never fewer than the true sliding count)."""
        self._expire(self._clock())
        return self._total

    def record(self) -> None:
        """Count one invalid response (the caller decides what counts: 401, 403, non-shared 429)."""
        now = self._clock()
        self._expire(now)
        index = int(now // self.slot)
        if self._slots and self._slots[-1][0] == index:
            self._slots[-1][1] += 1
        else:
            self._slots.append([index, 1])
        self._total += 1
        LOCAL_INVALID.set(self._total)

    def check(self) -> float:
        """Before a request: the seconds to wait first (0.0: none).

        Raises
        ------
        RequestRefused
            The count has reached ``hard``; ``retry_after`` says when it falls below it.
        """
        total = self.count()
        if total >= self.hard:
            self.refused += 1
            LOCAL_REFUSED.inc()
            retry_after = self._time_until_below(self.hard)
            if not self._warned:
                self._warned = True
                _log.error("%d invalid REST responses (401/403/429) in %.0f s: this process refuses requests "
                           "for %.0f s to keep the IP clear of Discord's ban (logged once per episode)",
                           total, self.window, retry_after)
            raise RequestRefused(retry_after, total)
        self._warned = False
        if total > self.soft:
            self.delayed += 1
            LOCAL_DELAYED.inc()
            return self.max_delay * (total - self.soft) / (self.hard - self.soft)
        return 0.0

    def _expire(self, now: float) -> None:
        oldest_kept = (now - self.window) / self.slot  # a slot ending at or before this is out
        slots = self._slots
        while slots and slots[0][0] + 1 <= oldest_kept:
            self._total -= slots.popleft()[1]
        LOCAL_INVALID.set(self._total)

    def _time_until_below(self, limit: int) -> float:
        """Seconds until enough slots leave the window for the count to fall below ``limit``."""
        now = self._clock()
        total = self._total
        for index, count in self._slots:
            total -= count
            if total < limit:
                return max(1.0, (index + 1) * self.slot + self.window - now)
        return self.window
