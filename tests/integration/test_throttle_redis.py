"""RedisThrottle against a real Redis: shared counts, exact concurrency, retry_after, fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ipc.keys import Keys
from ipc.throttle import MemoryThrottle, RedisThrottle
from shard.pipeline.throttling import ThrottleRule, throttle_message

pytestmark = pytest.mark.integration

ROLL = [ThrottleRule(5, 2.0, "user")]
RAID = [ThrottleRule(3, 30, "guild"), ThrottleRule(1, 30, "user")]
BROADCAST = [ThrottleRule(2, 30, "global")]


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_clusters_share_the_count(redis: aioredis.Redis, redis_prefix: str) -> None:
    clusters = [RedisThrottle(redis, Keys(redis_prefix)) for _ in range(4)]
    results = [await clusters[i % 4].hit("roll", 42, 1, ROLL) for i in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert 1.5 < results[-1].retry_after <= 2.0
    assert throttle_message(results[-1].retry_after).startswith("You're doing that too often — try again in ")
    assert (await clusters[0].hit("roll", 43, 1, ROLL)).allowed  # another user


async def test_many_concurrent_hits_allow_exactly_the_rate(redis: aioredis.Redis, redis_prefix: str) -> None:
    clusters = [RedisThrottle(redis, Keys(redis_prefix)) for _ in range(4)]
    results = await asyncio.gather(*(clusters[i % 4].hit("roll", 7, 1, ROLL) for i in range(200)))
    assert sum(r.allowed for r in results) == 5
    guild_results = await asyncio.gather(*(clusters[i % 4].hit("raid", 1000 + i, 9, RAID) for i in range(50)))
    assert sum(r.allowed for r in guild_results) == 3  # 50 different users, one guild
    global_results = await asyncio.gather(*(clusters[i % 4].hit("broadcast", i, i, BROADCAST) for i in range(50)))
    assert sum(r.allowed for r in global_results) == 2


X = [ThrottleRule(2, 1.0)]


async def test_retry_after_is_when_the_oldest_use_expires(redis: aioredis.Redis, redis_prefix: str) -> None:
    throttle = RedisThrottle(redis, Keys(redis_prefix))
    assert (await throttle.hit("x", 1, None, X)).allowed
    await asyncio.sleep(0.4)
    assert (await throttle.hit("x", 1, None, X)).allowed
    refused = await throttle.hit("x", 1, None, X)
    assert not refused.allowed and 0.45 < refused.retry_after <= 0.62
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await throttle.hit("x", 1, None, X)).allowed  # exactly when it said
    assert not (await throttle.hit("x", 1, None, X)).allowed


async def test_a_refused_hit_counts_against_no_rule(redis: aioredis.Redis, redis_prefix: str) -> None:
    throttle = RedisThrottle(redis, Keys(redis_prefix))
    assert (await throttle.hit("raid", 1, 9, RAID)).allowed
    assert not (await throttle.hit("raid", 1, 9, RAID)).allowed  # user rule: once per 30 s
    assert not (await throttle.hit("raid", 1, 9, RAID)).allowed
    assert (await throttle.hit("raid", 2, 9, RAID)).allowed
    assert (await throttle.hit("raid", 3, 9, RAID)).allowed  # guild: 3
    assert not (await throttle.hit("raid", 4, 9, RAID)).allowed


async def test_falls_back_to_memory_while_redis_is_down(redis: aioredis.Redis, redis_prefix: str) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.1, retry=None)
    try:
        throttle = RedisThrottle(dead, Keys(redis_prefix), retry_interval=60)
        start = time.monotonic()
        results = [await throttle.hit("roll", 1, 1, ROLL) for _ in range(6)]
        assert [r.allowed for r in results] == [True] * 5 + [False]
        assert not throttle.shared
        assert time.monotonic() - start < 1.0  # one failed attempt, then the fallback answers at once
        assert isinstance(throttle.fallback, MemoryThrottle)
    finally:
        await dead.aclose()
