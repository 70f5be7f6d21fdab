"""The event loop's lag: how late it runs a callback that was due.

Everything in a cluster process shares one event loop. When it is busy (a gateway backlog being
parsed, a garbage collection) every await waits, and a timer around an await measures the wait as
well as the work: a 2 ms query "takes" 800 ms. :class:`LoopLag` schedules a callback every
``interval_s`` and records how late each one ran, which

- is exported (``innkeeper_event_loop_lag_seconds``: the last sample as a gauge, every sample in a
  histogram), so ops see a saturated process for what it is;
- lets a timer subtract the loop's share: :meth:`LoopLag.worst_since` gives the worst lag seen
  since a moment, which the query funnel takes off a query's time before calling it slow.
"""

from __future__ import annotations

import asyncio
import collections
import time

from prometheus_client import Gauge, Histogram

__all__ = ("LoopLag", "LAG", "LAG_SECONDS")

LAG = Gauge("innkeeper_event_loop_lag_seconds", "How late the event loop ran the last lag probe (seconds)")
LAG_SECONDS = Histogram("innkeeper_event_loop_lag_probe_seconds", "How late the event loop ran each lag probe",
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))


class LoopLag:
    """Samples the running event loop's lag every ``interval_s`` seconds.

    Parameters
    ----------
    interval_s:
        Seconds between probes.
    keep:
        Samples kept for :meth:`worst_since` (at 50 ms, 400 samples cover 20 s).
    """

    __slots__ = ("interval_s", "samples", "_handle", "_due", "_observe", "_set")

    def __init__(self, *, interval_s: float = 0.05, keep: int = 400) -> None:
        if interval_s <= 0 or keep < 1:
            raise ValueError("need interval_s > 0 and keep >= 1")
        self.interval_s = interval_s
        #: (perf_counter when the probe ran, its lag in seconds), oldest first.
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._observe = LAG_SECONDS.observe
        self._set = LAG.set

    async def start(self) -> None:
        """Start probing the running loop."""
        if self._handle is None:
            self._schedule()

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._due = time.perf_counter() + self.interval_s
        self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._probe)

    def _probe(self) -> None:
        now = time.perf_counter()
        lag = max(0.0, now - self._due)
        self.samples.append((now, lag))
        self._observe(lag)
        self._set(lag)
        self._schedule()

    def current(self) -> float:
        """How late the pending probe already is (0 when it is not due yet): the loop's lag right now."""
        return 0.0 if self._handle is None else max(0.0, time.perf_counter() - self._due)

    def worst_since(self, since: float) -> float:
        """The worst lag (seconds) seen by a probe run at or after ``since`` (a ``time.perf_counter()``), or now.

        A probe that is late right now counts too: the loop may be in the middle of a long turn.
        """
        worst = self.current()
        for at, lag in reversed(self.samples):
            if at < since:
                break
            if lag > worst:
                worst = lag
        return worst
