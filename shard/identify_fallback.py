"""Identify without the shared queue while Redis is unreachable, so a cluster still comes up.

The identify queue (:mod:`ipc.identify`, driven by :class:`shard.runtime.ClusterRuntime`) lives in
Redis: while Redis is down it retries with backoff, and a shard waiting on it would never
connect. :func:`identify_with_fallback` waits on the queue as long as Redis answers; once Redis
has been unreachable for ``give_up_s`` it stops waiting and paces this process's identifies
itself with :class:`LocalIdentifyPacer`: one IDENTIFY per ``max_concurrency`` bucket per window
(plus the margin), as discord.py would. Other clusters falling back at the same time may then
collide in a bucket; Discord answers that with INVALID_SESSION and discord.py identifies again
(through this hook): slower, but the bot runs. The fallback is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter
from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .runtime import ClusterRuntime

__all__ = ("LocalIdentifyPacer", "identify_with_fallback", "LOCAL_IDENTIFIES")

_log = logging.getLogger(__name__)

LOCAL_IDENTIFIES = Counter("innkeeper_identify_local_total",
                           "IDENTIFYs paced by this process alone because Redis was unreachable")


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


async def _reachable(redis: aioredis.Redis, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await redis.ping()
    except (RedisError, OSError, TimeoutError):
        return False
    return True


async def identify_with_fallback(runtime: ClusterRuntime, redis: aioredis.Redis, pacer: LocalIdentifyPacer,
                                 shard_id: int | None, *, initial: bool, give_up_s: float = 3.0,
                                 check_every_s: float = 1.0) -> None:
    """Wait for the shared identify queue, or for the local pacer once Redis has been down ``give_up_s``.

    Parameters
    ----------
    runtime:
        The cluster runtime whose :meth:`~shard.runtime.ClusterRuntime.before_identify` is the queue.
    redis:
        The cluster's Redis client (pinged to tell a long queue from an unreachable Redis).
    pacer:
        The process's local pacer.
    shard_id, initial:
        As in ``before_identify_hook``.
    """
    sid = 0 if shard_id is None else shard_id
    queued = asyncio.create_task(runtime.before_identify(shard_id, initial=initial), name=f"identify-queue-{sid}")
    down_since: float | None = None
    try:
        while True:
            done, _ = await asyncio.wait({queued}, timeout=check_every_s)
            if done:
                queued.result()
                return
            if await _reachable(redis, timeout=min(1.0, check_every_s)):
                down_since = None
                continue
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if now - down_since >= give_up_s:
                break
    finally:
        if not queued.done():
            queued.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await queued
    queue = runtime.queue
    max_concurrency = queue.max_concurrency if queue is not None else 1
    _log.warning("Redis unreachable for %.0f s: shard %d identifies without the shared queue "
                 "(local pacing, max_concurrency %d)", give_up_s, sid, max_concurrency, extra={"shard_id": sid})
    runtime.tracker.note_identifying(sid)
    waited = await pacer.wait(sid, max_concurrency)
    runtime.tracker.note_identified(sid, waited)
    LOCAL_IDENTIFIES.inc()
