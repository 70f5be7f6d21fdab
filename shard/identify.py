"""The cluster's identify path: the shared queue, the local fallback, the budget guard, connect deadlines.

:class:`IdentifyGate` is what ``ClusterBot.before_identify_hook`` awaits before every IDENTIFY
(first connect, re-identify after an INVALID_SESSION, a reconnect from scratch). It replaces
discord.py's default hook, which sleeps 5 s per shard and knows nothing of other processes or of
``max_concurrency``:

* **The shared queue** (:class:`ipc.identify.IdentifyQueue`): one Redis lock per bucket
  ``shard_id % max_concurrency``, lowest shard first across every cluster. The lock is granted
  *pending* and re-armed for one window from the shard's READY (:meth:`IdentifyGate.prepare`
  registers the READY callback on the :class:`~shard.tracker.ShardTracker`), which is when Discord
  has certainly stamped the IDENTIFY.
* **The local fallback**: once Redis has been unreachable for ``give_up_s`` the shard stops
  waiting on it and :class:`LocalIdentifyPacer` paces this process alone (one IDENTIFY per bucket
  per window plus the margin). Clusters falling back together may collide and draw
  INVALID_SESSION; discord.py then identifies again through this hook: slower, but the bot runs.
* **The budget guard**: while the stored ``session_start_limit.remaining`` is at or below the
  reserve, the shard waits (the cluster shows ``BLOCKED`` with the reason) instead of raising, and
  asks Discord for fresh numbers once a minute.
* **Connect deadlines**: discord.py gives each shard ``shard_connect_timeout`` (180 s) to connect,
  identify and start. Time spent waiting in the queue is not connect time: the deadline registered
  with :meth:`IdentifyGate.connect_deadline` (by :mod:`shard.launch`) is paused while the shard
  queues, and runs again once the queue grants it.

``max_concurrency`` comes from the launcher (``--max-concurrency`` in the rendered supervisord
program). A cluster started on its own reads the budget the launcher stored in Redis, or, when it
must ask ``GET /gateway/bot`` for its shard count anyway, takes it from that answer
(:meth:`IdentifyGate.prepare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from innkeeper.backoff import Backoff
from innkeeper.services import BackgroundTasks
from ipc.identify import IdentifyBudgetExhausted, IdentifyQueue, IdentifyTicket, read_budget, store_budget

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

    from .tracker import ShardTracker

__all__ = ("IdentifyGate", "LocalIdentifyPacer", "SessionLimits", "IDENTIFY_WAIT", "LOCAL_IDENTIFIES")

_log = logging.getLogger(__name__)

#: How often a shard held back by the budget guard asks Discord for fresh numbers.
BUDGET_REFRESH_S = 60.0

IDENTIFY_WAIT = Histogram("innkeeper_identify_wait_seconds", "Time a shard waited for its identify slot",
                          buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, float("inf")))
LOCAL_IDENTIFIES = Counter("innkeeper_identify_local_total",
                           "IDENTIFYs paced by this process alone because Redis was unreachable")

#: Returns Discord's current ``session_start_limit`` (``GET /gateway/bot``).
SessionLimits = Callable[[], Awaitable[Mapping[str, Any]]]


class LocalIdentifyPacer:
    """Per-process identify pacing: one IDENTIFY per bucket (``shard_id % max_concurrency``) per window.

    Parameters
    ----------
    window_s:
        Seconds per identify window.
    margin_s:
        Extra seconds past the window.
    """

    __slots__ = ("window_s", "margin_s", "_last", "_locks")

    def __init__(self, window_s: float, margin_s: float) -> None:
        self.window_s = window_s
        self.margin_s = margin_s
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def wait(self, shard_id: int, max_concurrency: int) -> float:
        """Wait for ``shard_id``'s turn in its bucket; returns the seconds waited."""
        bucket = shard_id % max(1, max_concurrency)
        lock = self._locks.setdefault(bucket, asyncio.Lock())
        started = time.monotonic()
        async with lock:
            last = self._last.get(bucket)
            if last is not None:
                delay = last + self.window_s + self.margin_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._last[bucket] = time.monotonic()
        return time.monotonic() - started


class IdentifyGate:
    """The cluster's ``before_identify_hook`` (see the module docstring).

    Parameters
    ----------
    redis, keys:
        The cluster's Redis client and key names.
    tracker:
        The cluster's shard states: the gate marks shards IDENTIFYING, counts identifies, sets the
        BLOCKED reason, and learns of each READY from it.
    max_concurrency:
        Discord's ``max_concurrency`` as the launcher planned it; ``None`` to find it in
        :meth:`prepare`.
    window_s, margin_s, reserve:
        ``INNKEEPER_IDENTIFY_WINDOW``, ``INNKEEPER_IDENTIFY_MARGIN``, ``INNKEEPER_IDENTIFY_RESERVE``.
    session_limits:
        Asks Discord for ``session_start_limit``; used only while the budget guard holds shards back.
    give_up_s:
        Seconds Redis may be unreachable before shards identify on local pacing.
    check_every_s:
        How often a waiting shard checks whether Redis still answers.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, tracker: ShardTracker, *, max_concurrency: int | None,
                 window_s: float, margin_s: float, reserve: int = 0, session_limits: SessionLimits | None = None,
                 give_up_s: float = 3.0, check_every_s: float = 1.0) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.redis = redis
        self.keys = keys
        self.tracker = tracker
        self.window_s = window_s
        self.margin_s = margin_s
        self.reserve = reserve
        self.session_limits = session_limits
        self.give_up_s = give_up_s
        self.check_every_s = check_every_s
        self.pacer = LocalIdentifyPacer(window_s, margin_s)
        self.queue: IdentifyQueue | None = None
        self._max_concurrency = max_concurrency
        #: The connect deadlines of shards being launched, paused while they queue.
        self._deadlines: dict[int, asyncio.Timeout] = {}
        #: Granted identifies whose READY has not come yet: READY starts the bucket's window.
        self._unacknowledged: dict[int, IdentifyTicket] = {}
        self._budget_checked = 0.0
        self._tasks = BackgroundTasks("identify")
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # replaceable in tests
        tracker.on_ready_payload(self._acknowledged)

    @property
    def max_concurrency(self) -> int:
        """Discord's ``max_concurrency`` (1, the slowest safe rate, until :meth:`prepare` knows better)."""
        return self._max_concurrency or 1

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to start: the queue is built by :meth:`prepare`, when the shards launch."""

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def prepare(self, session_start_limit: Mapping[str, Any] | None = None) -> IdentifyQueue:
        """Build the identify queue before the first shard connects.

        Parameters
        ----------
        session_start_limit:
            Discord's numbers when this process had to ask ``GET /gateway/bot`` itself (it runs
            without a launcher's plan): they are stored as the budget and give ``max_concurrency``.
            Otherwise ``max_concurrency`` is the launcher's, or the stored budget's, or 1.
        """
        if self.queue is not None:
            return self.queue
        if session_start_limit is not None:
            try:
                budget = await store_budget(self.redis, self.keys, session_start_limit)
            except (ValueError, RedisError, OSError) as exc:
                _log.warning("cannot store the identify budget (%s)", exc)
                self._max_concurrency = self._max_concurrency or int(session_start_limit.get("max_concurrency", 1))
            else:
                self._budget_checked = time.monotonic()
                self._max_concurrency = budget.max_concurrency
        elif self._max_concurrency is None:
            try:
                stored = await read_budget(self.redis, self.keys)
            except (RedisError, OSError) as exc:
                _log.warning("cannot read the identify budget from Redis: %s", exc)
                stored = None
            if stored is None:
                _log.warning("max_concurrency unknown (no --max-concurrency, no stored budget): using 1, "
                             "the slowest safe rate")
            self._max_concurrency = stored.max_concurrency if stored is not None else 1
        self.queue = IdentifyQueue(self.redis, self.keys, max_concurrency=self.max_concurrency,
                                   window_s=self.window_s, reserve=self.reserve, margin_s=self.margin_s)
        _log.info("identify queue: max_concurrency %d, window %.3f s + margin %.3f s, reserve %d",
                  self.max_concurrency, self.window_s, self.margin_s, self.reserve)
        return self.queue

    # --- connect deadlines ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def connect_deadline(self, shard_id: int, timeout: float | None) -> AsyncIterator[None]:
        """``asyncio.timeout(timeout)`` for one shard's connect, paused while the shard waits its turn."""
        async with asyncio.timeout(timeout) as deadline:
            self._deadlines[shard_id] = deadline
            try:
                yield
            finally:
                if self._deadlines.get(shard_id) is deadline:
                    del self._deadlines[shard_id]

    def _pause_deadline(self, shard_id: int) -> asyncio.Timeout | None:
        deadline = self._deadlines.get(shard_id)
        _reschedule(deadline, None)
        return deadline

    def _resume_deadline(self, shard_id: int, deadline: asyncio.Timeout | None, timeout: float | None) -> None:
        if deadline is not None and self._deadlines.get(shard_id) is deadline:
            _reschedule(deadline, None if timeout is None else asyncio.get_running_loop().time() + timeout)

    # --- the hook ---------------------------------------------------------------------------------
    async def before_identify(self, shard_id: int | None, *, initial: bool = False,
                              connect_timeout: float | None = None) -> None:
        """Wait for this shard's identify slot; the caller sends IDENTIFY as soon as this returns.

        Parameters
        ----------
        shard_id, initial:
            As discord.py passes them to ``before_identify_hook``.
        connect_timeout:
            The shard's connect timeout, restarted once the slot is granted.
        """
        sid = 0 if shard_id is None else shard_id
        queue = self.queue
        if queue is None:  # not launched through :mod:`shard.launch`: behave like discord.py's default
            if not initial:
                await self._sleep(self.window_s)
            return
        self.tracker.note_identifying(sid)
        deadline = self._pause_deadline(sid)
        try:
            ticket = await self._queue_or_local(queue, sid)
        finally:
            self._resume_deadline(sid, deadline, connect_timeout)
        if ticket is None:
            return
        if self.tracker.blocked_reason is not None:
            _log.info("identify budget available again")
            self.tracker.set_blocked(None)
        # The IDENTIFY goes out as soon as this returns; the bucket's lock stays pending until the
        # shard's READY proves Discord stamped it (``_acknowledged``).
        self._unacknowledged[sid] = ticket
        self.tracker.note_identified(sid, ticket.waited_s)
        IDENTIFY_WAIT.observe(ticket.waited_s)
        _log.debug("shard %d identifies after %.3f s in bucket %d", sid, ticket.waited_s, ticket.bucket,
                   extra={"shard_id": sid})

    async def _queue_or_local(self, queue: IdentifyQueue, sid: int) -> IdentifyTicket | None:
        """The queue's ticket; or None after identifying on local pacing because Redis is down."""
        queued = asyncio.create_task(self._ticket(queue, sid), name=f"identify-queue-{sid}")
        down_since: float | None = None
        try:
            while True:
                done, _ = await asyncio.wait({queued}, timeout=self.check_every_s)
                if done:
                    return queued.result()
                if await self._reachable():
                    down_since = None
                    continue
                now = time.monotonic()
                down_since = down_since if down_since is not None else now
                if now - down_since >= self.give_up_s:
                    break
        finally:
            if not queued.done():
                queued.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await queued
        _log.warning("Redis unreachable for %.0f s: shard %d identifies without the shared queue "
                     "(local pacing, max_concurrency %d)", self.give_up_s, sid, self.max_concurrency,
                     extra={"shard_id": sid})
        waited = await self.pacer.wait(sid, self.max_concurrency)
        self.tracker.note_identified(sid, waited)
        IDENTIFY_WAIT.observe(waited)
        LOCAL_IDENTIFIES.inc()
        return None

    async def _reachable(self) -> bool:
        try:
            async with asyncio.timeout(min(1.0, self.check_every_s)):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    async def _ticket(self, queue: IdentifyQueue, sid: int) -> IdentifyTicket:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                ticket = await queue.acquire(sid)
            except IdentifyBudgetExhausted as exc:
                if self.tracker.blocked_reason is None:
                    _log.error("%s", exc, extra={"error_code": exc.code.value, "shard_id": sid})
                self.tracker.set_blocked(f"identify budget exhausted: {exc.remaining} left "
                                         f"(reserve {exc.reserve}), resets in {exc.reset_in_s:.0f} s")
                await self._sleep(min(max(exc.reset_in_s, 1.0), BUDGET_REFRESH_S))
                if time.monotonic() - self._budget_checked >= BUDGET_REFRESH_S:
                    await self._refresh_budget()
                continue
            except (RedisError, OSError, TimeoutError) as exc:
                delay = backoff.next()
                _log.error("identify queue unreachable (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            return ticket

    async def _refresh_budget(self) -> None:
        """Ask Discord for ``session_start_limit`` and store it (only while the guard holds shards back)."""
        self._budget_checked = time.monotonic()
        if self.session_limits is None:
            return
        try:
            limits = await asyncio.wait_for(self.session_limits(), timeout=15)
            budget = await store_budget(self.redis, self.keys, limits)
        except Exception as exc:  # noqa: BLE001 - Discord, Redis or a malformed answer: try again later
            _log.warning("could not refresh the identify budget: %s", exc)
            return
        _log.info("identify budget: %d of %d left, resets in %.0f s", budget.remaining, budget.total,
                  budget.reset_in_s)

    def _acknowledged(self, shard_id: int) -> None:
        """READY arrived for ``shard_id``: start its bucket's window now (see :mod:`ipc.identify`)."""
        ticket = self._unacknowledged.pop(shard_id, None)
        if ticket is None or self.queue is None:
            return
        self._tasks.spawn(self.queue.confirm(ticket), name=f"confirm-{shard_id}")

    async def settle(self) -> None:
        """Wait until every READY confirmation sent so far reached Redis (tests, shutdown)."""
        await self._tasks.wait()


def _reschedule(deadline: asyncio.Timeout | None, when: float | None) -> None:
    """Move a connect deadline (``None``: pause it); one that already fired or ended is left alone."""
    if deadline is None:
        return
    try:
        deadline.reschedule(when)
    except RuntimeError:
        pass
