"""On a cold start, a cluster whose turn to identify is far off waits before it starts up at all.

When the launcher starts every cluster at once, they all import discord.py and the rest, log in
and start their services together, on the same cores. Yet only the shards of the first identify
round can use the CPU right away: with ``max_concurrency`` M the shards ``[r·M, (r+1)·M)`` identify
in round ``r``, ``r`` windows after the first. So a cluster whose lowest shard is in round ``r ≥ 1``
sleeps until ``lead_s`` seconds before its round, counted from the launcher's cold-start mark
(:func:`ipc.identify.mark_cold_start`, on Redis's clock), and only then imports and logs in. The
clusters of the first round start alone and identify sooner; the cold start's total comes closer
to the identify floor.

This module is imported before anything heavy (discord.py, aiohttp, asyncpg), and it never stops a
cluster from starting: without a mark (a restart of one cluster, the mark expired, Redis down), once
the round is near, or when every shard of the cluster has a saved session to RESUME (a restart of
every cluster at once: they resume, nobody waits for an identify round), it returns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis
from redis.exceptions import RedisError

from ipc.identify import COLD_START_ELAPSED
from ipc.keys import Keys

__all__ = ("wait_for_round", "START_LEAD_S", "first_round")

_log = logging.getLogger(__name__)

#: Seconds before its round a waiting cluster starts up: its imports, login and services, under load.
START_LEAD_S = 3.0


def first_round(shard_ids: Sequence[int], max_concurrency: int) -> int:
    """The identify round of a cluster's lowest shard when every bucket is full: ``min(ids) // M``."""
    return min(shard_ids) // max(1, max_concurrency)


def wait_for_round(redis_url: str, keys: Keys, shard_ids: Sequence[int], max_concurrency: int, *,
                   window_s: float, lead_s: float = START_LEAD_S, resume: bool = True) -> float:
    """Sleep until ``lead_s`` before this cluster's first identify round of a cold start; returns the seconds slept.

    Parameters
    ----------
    redis_url, keys:
        Where the launcher's cold-start mark is.
    shard_ids, max_concurrency:
        This cluster's shards and Discord's ``max_concurrency``.
    window_s:
        The identify window (``INNKEEPER_IDENTIFY_WINDOW``).
    lead_s:
        How long before its round the cluster starts up.
    resume:
        ``INNKEEPER_RESUME_ON_RESTART``: a cluster with a saved session for every shard starts at once.
    """
    turn_s = first_round(shard_ids, max_concurrency) * window_s - lead_s
    if turn_s <= 0:
        return 0.0
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        if resume and client.exists(*(keys.session(sid) for sid in shard_ids)) == len(shard_ids):
            _log.info("every shard of this cluster has a saved session: starting now to resume them")
            return 0.0
        elapsed_ms = int(client.register_script(COLD_START_ELAPSED)(keys=[keys.cold_start()]))
    except (RedisError, OSError, ValueError) as exc:
        _log.debug("no cold-start mark readable (%s): starting now", exc)
        return 0.0
    finally:
        client.close()
    if elapsed_ms < 0:
        return 0.0
    wait = turn_s - elapsed_ms / 1000
    if wait <= 0:
        return 0.0
    _log.info("cold start: this cluster identifies in round %d; starting up in %.1f s, %.1f s before its turn",
              first_round(shard_ids, max_concurrency), wait, lead_s)
    time.sleep(wait)
    return wait
