"""RedisThrottle against a real Redis: shared counts, exact concurrency, retry_after, fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ipc.keys import Keys
from ipc.throttle import MemoryThrottle, RedisThrottle, ThrottleRule

pytestmark = pytest.mark.integration

RULES = {"roll": [ThrottleRule(5, 2.0, "user")], "raid": [ThrottleRule(3, 30, "guild"), ThrottleRule(1, 30, "user")],
         "broadcast": [ThrottleRule(2, 30, "global")]}


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_clusters_share_the_count(redis: aioredis.Redis, redis_prefix: str) -> None:
    clusters = [RedisThrottle(redis, Keys(redis_prefix), RULES) for _ in range(4)]
    results = [await clusters[i % 4].hit("roll", 42, 1) for i in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert 1.5 < results[-1].retry_after <= 2.0
    assert results[-1].message.startswith("You're doing that too often — try again in ")
    assert (await clusters[0].hit("roll", 43, 1)).allowed  # another user


async def test_many_concurrent_hits_allow_exactly_the_rate(redis: aioredis.Redis, redis_prefix: str) -> None:
    clusters = [RedisThrottle(redis, Keys(redis_prefix), RULES) for _ in range(4)]
    results = await asyncio.gather(*(clusters[i % 4].hit("roll", 7, 1) for i in range(200)))
    assert sum(r.allowed for r in results) == 5
    guild_results = await asyncio.gather(*(clusters[i % 4].hit("raid", 1000 + i, 9) for i in range(50)))
    assert sum(r.allowed for r in guild_results) == 3  # 50 different users, one guild
    global_results = await asyncio.gather(*(clusters[i % 4].hit("broadcast", i, i) for i in range(50)))
    assert sum(r.allowed for r in global_results) == 2


async def test_retry_after_is_when_the_oldest_use_expires(redis: aioredis.Redis, redis_prefix: str) -> None:
    throttle = RedisThrottle(redis, Keys(redis_prefix), {"x": [ThrottleRule(2, 1.0)]})
    assert (await throttle.hit("x", 1, None)).allowed
    await asyncio.sleep(0.4)
    assert (await throttle.hit("x", 1, None)).allowed
    refused = await throttle.hit("x", 1, None)
    assert not refused.allowed and 0.45 < refused.retry_after <= 0.62
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await throttle.hit("x", 1, None)).allowed  # exactly when it said
    assert not (await throttle.hit("x", 1, None)).allowed


async def test_a_refused_hit_counts_against_no_rule(redis: aioredis.Redis, redis_prefix: str) -> None:
    throttle = RedisThrottle(redis, Keys(redis_prefix), RULES)
    assert (await throttle.hit("raid", 1, 9)).allowed
    assert not (await throttle.hit("raid", 1, 9)).allowed  # user rule: once per 30 s
    assert not (await throttle.hit("raid", 1, 9)).allowed
    assert (await throttle.hit("raid", 2, 9)).allowed and (await throttle.hit("raid", 3, 9)).allowed  # guild: 3
    assert not (await throttle.hit("raid", 4, 9)).allowed


async def test_falls_back_to_memory_while_redis_is_down(redis: aioredis.Redis, redis_prefix: str) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.1, retry=None)
    try:
        throttle = RedisThrottle(dead, Keys(redis_prefix), RULES, retry_interval=60)
        start = time.monotonic()
        results = [await throttle.hit("roll", 1, 1) for _ in range(6)]
        assert [r.allowed for r in results] == [True] * 5 + [False]
        assert not throttle.shared
        assert time.monotonic() - start < 1.0  # one failed attempt, then the fallback answers at once
        assert isinstance(throttle.fallback, MemoryThrottle)
    finally:
        await dead.aclose()
