"""The cluster runtime of one shard process: identify queue, heartbeat, metrics and watchdog.

:class:`ClusterRuntime` is one service of :class:`shard.bot.ClusterBot` (started in
``setup_hook``, stopped in ``close``), and ``ClusterBot.before_identify_hook`` calls
:meth:`ClusterRuntime.before_identify`. That replaces discord.py's default hook, which sleeps 5 s
per shard and knows nothing of other processes or of ``max_concurrency``.

At start it asks ``GET /gateway/bot`` for ``session_start_limit``: the answer gives
``max_concurrency`` (so the buckets are Discord's) and refreshes the identify budget in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ipc.identify import IdentifyBudgetExhausted, IdentifyQueue, IdentifyTicket
from ipc.sessions import SessionStore

from .heartbeat import Heartbeat
from .metrics import ClusterMetrics
from .tracker import ShardTracker
from .watchdog import Watchdog

if TYPE_CHECKING:
    from .bot import ClusterBot

__all__ = ("ClusterRuntime",)

_log = logging.getLogger(__name__)

#: How often a shard held back by the budget guard asks Discord for fresh numbers.
_BUDGET_REFRESH_S = 60.0


class ClusterRuntime:
    """Everything that makes a ``ClusterBot`` a well-behaved member of the cluster.

    Parameters
    ----------
    bot:
        The cluster's bot: ``settings``, ``cluster_id``, ``redis``, ``keys``, ``shard_ids``.
    """

    def __init__(self, bot: ClusterBot) -> None:
        self.bot = bot
        s = bot.settings
        shard_ids = list(bot.shard_ids or range(bot.shard_count or 1))
        self.tracker = ShardTracker(bot, shard_ids)
        self.metrics = ClusterMetrics(self.tracker, bot.cluster_id, host=s.metrics_host, port_base=s.metrics_port_base)
        self.sessions = SessionStore(bot.redis, bot.keys)
        self.heartbeat = Heartbeat(
            bot.redis, bot.keys, self.tracker, cluster_id=bot.cluster_id, interval_s=s.heartbeat_interval_s,
            ttl_s=s.heartbeat_ttl_s, metrics_port=lambda: self.metrics.port, sessions=self.sessions,
            shard_count=bot.shard_count)
        self.watchdog = Watchdog(bot, self.tracker, zombie_after_s=s.zombie_after_s)
        self.queue: IdentifyQueue | None = None
        #: The connect timeouts of shards being launched (``shard.launch``), paused while they queue.
        self.connect_deadlines: dict[int, asyncio.Timeout] = {}
        #: Granted identifies whose READY has not come yet: READY starts the bucket's window.
        self._unacknowledged: dict[int, IdentifyTicket] = {}
        self.tracker.on_ready_payload(self._acknowledged)
        self._budget_checked = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self._sleep = asyncio.sleep  # replaceable in tests

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.tracker.attach()
        mc = await self._refresh_budget()
        if mc is None:
            mc = await self._max_concurrency_from_plan()
        s = self.bot.settings
        self.queue = IdentifyQueue(self.bot.redis, self.bot.keys, max_concurrency=mc, window_s=s.identify_window_s,
                                   reserve=s.identify_reserve, margin_s=s.identify_margin_s)
        _log.info("identify queue: max_concurrency %d, window %.3f s + margin %.3f s, reserve %d", mc,
                  s.identify_window_s, s.identify_margin_s, s.identify_reserve)
        await self.metrics.start()
        await self.heartbeat.start()
        await self.watchdog.start()

    async def stop(self) -> None:
        self.tracker.stopping = True
        await self.watchdog.stop()
        await self.heartbeat.stop()
        await self.metrics.stop()
        self.tracker.detach()

    async def _refresh_budget(self) -> int | None:
        """Store Discord's ``session_start_limit``; return its ``max_concurrency`` (None on failure)."""
        self._budget_checked = time.monotonic()
        try:
            _, _, limit = await asyncio.wait_for(self.bot.http.get_bot_gateway(), timeout=15)
            limits: dict[str, Any] = dict(limit)
            mc = int(limits.get("max_concurrency", 1))
            queue = self.queue or IdentifyQueue(self.bot.redis, self.bot.keys, max_concurrency=mc,
                                                window_s=self.bot.settings.identify_window_s)
            budget = await queue.store_budget(limits)
            _log.info("identify budget: %d of %d left, resets in %.0f s", budget.remaining, budget.total,
                      budget.reset_in_s)
            return mc
        except Exception as exc:
            _log.warning("GET /gateway/bot failed (%s); the identify budget is not refreshed", exc)
            return None

    async def _max_concurrency_from_plan(self) -> int:
        from cluster.state import load_plan

        try:
            plan = await load_plan(self.bot.redis, self.bot.keys)
        except Exception as exc:
            _log.warning("cannot read the plan from Redis: %s", exc)
            plan = None
        if plan is None:
            _log.warning("max_concurrency unknown: using 1, the slowest safe rate")
            return 1
        return plan.max_concurrency

    # --- identify ---------------------------------------------------------------------------------
    def _acknowledged(self, shard_id: int) -> None:
        """READY arrived for ``shard_id``: start its bucket's window now (see :mod:`ipc.identify`)."""
        ticket = self._unacknowledged.pop(shard_id, None)
        if ticket is None or self.queue is None:
            return
        confirm = asyncio.create_task(self.queue.confirm(ticket), name=f"identify-confirm-{shard_id}")
        self._pending.add(confirm)
        confirm.add_done_callback(self._pending.discard)

    async def before_identify(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait for this shard's identify slot; the caller sends IDENTIFY as soon as this returns.

        While the identify budget is at or below the reserve the shard waits (the reason is in the
        heartbeat, the status page and the log) instead of failing: a failing hook makes discord.py
        retry or the process exit, and a restart loop would help no one.
        """
        sid = 0 if shard_id is None else shard_id
        queue = self.queue
        if queue is None:  # setup_hook has not run: behave like discord.py's default
            if not initial:
                await asyncio.sleep(self.bot.settings.identify_window_s)
            return
        self.tracker.note_identifying(sid)
        # Time in the queue is not connect time: discord.py's shard_connect_timeout (180 s) would
        # otherwise cut short a shard that waits its turn behind dozens of windows.
        deadline = self.connect_deadlines.get(sid)
        _reschedule(deadline, None)
        try:
            ticket = await self._ticket(queue, sid)
        finally:
            if deadline is not None and self.connect_deadlines.get(sid) is deadline:
                timeout = self.bot.shard_connect_timeout
                _reschedule(deadline, None if timeout is None else asyncio.get_running_loop().time() + timeout)
        if self.tracker.blocked_reason is not None:
            _log.info("identify budget available again")
            self.tracker.set_blocked(None)
        # The IDENTIFY goes out as soon as this hook returns; the bucket's lock stays pending until
        # the shard's READY proves Discord stamped it (``_acknowledged``).
        self._unacknowledged[sid] = ticket
        self.tracker.note_identified(sid, ticket.waited_s)
        self.metrics.identify_wait.observe(ticket.waited_s)
        _log.debug("shard %d identifies after %.3f s in bucket %d", sid, ticket.waited_s, ticket.bucket,
                   extra={"shard_id": sid})

    async def _ticket(self, queue: IdentifyQueue, sid: int) -> IdentifyTicket:
        backoff = 0.1
        while True:
            try:
                ticket = await queue.acquire(sid)
            except IdentifyBudgetExhausted as exc:
                if self.tracker.blocked_reason is None:
                    _log.error("%s", exc, extra={"error_code": exc.code.value, "shard_id": sid})
                self.tracker.set_blocked(f"identify budget exhausted: {exc.remaining} left "
                                         f"(reserve {exc.reserve}), resets in {exc.reset_in_s:.0f} s")
                await self._sleep(min(max(exc.reset_in_s, 1.0), _BUDGET_REFRESH_S))
                if time.monotonic() - self._budget_checked >= _BUDGET_REFRESH_S:
                    await self._refresh_budget()
                continue
            except (RedisError, OSError, TimeoutError) as exc:
                _log.error("identify queue unreachable (%s); retrying in %.1f s", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            return ticket


def _reschedule(deadline: asyncio.Timeout | None, when: float | None) -> None:
    """Move a connect deadline (``None``: pause it); one that already fired or ended is left alone."""
    if deadline is None:
        return
    try:
        deadline.reschedule(when)
    except RuntimeError:
        pass
