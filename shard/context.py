"""What one cluster process is given: its settings, its place in the plan, and its two connections.

:class:`ClusterContext` is built once by ``python -m shard`` (or a test) and handed to
:func:`shard.assembly.build_cluster`, which gives each part of the process only what it uses. The
context owns the process's one Redis client and its one database pool: it opens them (lazily: the
pool connects when the database service starts) and :meth:`ClusterContext.aclose` closes them,
after everything that uses them has stopped. It also holds the process's circuit breakers
(:class:`~innkeeper.breakers.Breakers`): the ``redis`` one watches every connection of the Redis
client (:func:`ipc.redis_breaker.guard`), the ``postgres`` one every query of the pool, and the
REST hook feeds ``discord_rest`` and ``http``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from db.pool import Database
from innkeeper.breakers import Breakers
from innkeeper.loop_lag import LoopLag
from innkeeper.settings import Settings
from ipc import redis_breaker
from ipc.keys import Keys

__all__ = ("ClusterContext", "redis_client", "REDIS_MAX_CONNECTIONS")

_log = logging.getLogger(__name__)

#: Connections in the one Redis pool of a cluster: rate limiter, bus, cache, throttle, heartbeat,
#: identify queue and sessions all draw from it (each bounds its own concurrency well below this).
REDIS_MAX_CONNECTIONS = 200


def redis_client(url: str) -> aioredis.Redis:
    """The cluster's Redis client: bytes replies, one big pool, and calls that fail fast.

    redis-py retries a failed call 10 times by default (seconds of backoff): while Redis is down
    that would hold every command that touches the cache or the throttle. Two quick retries cover
    a pooled connection that went stale (a restarted Redis); past that each component falls back
    on its own (local limits, local throttle, the database) and recovers by itself.
    """
    return aioredis.from_url(url, max_connections=REDIS_MAX_CONNECTIONS, decode_responses=False,
                             health_check_interval=30, socket_connect_timeout=2.0, socket_timeout=5.0,
                             retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterContext:
    """One cluster process's settings, plan and connections.

    Attributes
    ----------
    settings:
        The process's settings.
    cluster_id:
        This cluster's index in the plan: names its heartbeat, metrics port and logs.
    shard_ids:
        The shards this cluster runs, or ``None`` for every shard of the bot.
    shard_count:
        The bot's total shard count, or ``None`` to ask ``GET /gateway/bot`` at launch.
    max_concurrency:
        Discord's ``max_concurrency`` as the launcher planned it, or ``None`` to find it at launch.
    generation:
        The generation of clusters this process belongs to (:mod:`shard.handover`).
    redis, keys:
        The process's Redis client and key names.
    database:
        The process's database pool (connected by the database service).
    loop_lag:
        The process's event-loop lag probe (started by the assembly; the pool reads it).
    breakers:
        The process's circuit breakers, one per dependency.
    """

    settings: Settings
    cluster_id: int
    shard_ids: tuple[int, ...] | None
    shard_count: int | None
    max_concurrency: int | None
    generation: int
    redis: aioredis.Redis
    keys: Keys
    database: Database
    loop_lag: LoopLag
    breakers: Breakers

    @classmethod
    def create(cls, settings: Settings, *, cluster_id: int = 0, shard_ids: Sequence[int] | None = None,
               shard_count: int | None = None, max_concurrency: int | None = None,
               generation: int = 0) -> ClusterContext:
        """A context with a fresh Redis client and an unconnected database pool."""
        lag = LoopLag()
        breakers = Breakers.from_settings(settings)
        return cls(settings=settings, cluster_id=cluster_id,
                   shard_ids=None if shard_ids is None else tuple(shard_ids), shard_count=shard_count,
                   max_concurrency=max_concurrency, generation=generation,
                   redis=redis_breaker.guard(redis_client(settings.redis_url), breakers["redis"]),
                   keys=Keys(settings.redis_prefix),
                   database=Database.from_settings(settings, connect_timeout=5.0, loop_lag=lag,
                                                   breaker=breakers["postgres"]),
                   loop_lag=lag, breakers=breakers)

    async def aclose(self) -> None:
        """Close the database pool and the Redis client (after every service has stopped)."""
        try:
            await self.database.close()
        finally:
            await self.redis.aclose()
