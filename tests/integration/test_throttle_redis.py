"""RedisThrottle against a real Redis: shared counts, exact concurrency, retry_after, fallback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from ipc.keys import Keys
from ipc.throttle import MemoryThrottle, RedisThrottle
from shard.pipeline.throttling import ThrottleRule, throttle_message
from tests.support import ReservedPort

pytestmark = pytest.mark.integration

#: Retry-after times come from Redis in whole milliseconds.
EPS = 0.005

RULES = {"roll": [ThrottleRule(5, 2.0, "user")], "raid": [ThrottleRule(3, 30, "guild"), ThrottleRule(1, 30, "user")],
         "broadcast": [ThrottleRule(2, 30, "global")]}


async def test_clusters_share_the_count(redis: aioredis.Redis, redis_prefix: str) -> None:
    clusters = [RedisThrottle(redis, Keys(redis_prefix)) for _ in range(4)]
    start = time.monotonic()
    results = [await clusters[i % 4].hit("roll", 42, 1, RULES["roll"]) for i in range(7)]
    took = time.monotonic() - start
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    # until the oldest of the five (taken after `start`) is 2 s old
    assert 2.0 - took - EPS <= results[-1].retry_after <= 2.0 + EPS
    assert throttle_message(results[-1].retry_after).startswith("You're doing that too often — try again in ")
    assert (await clusters[0].hit("roll", 43, 1, RULES["roll"])).allowed  # another user


async def test_many_concurrent_hits_allow_exactly_the_rate(redis: aioredis.Redis, redis_prefix: str) -> None:
    # Periods far longer than the burst, and no fallback to per-process counting on a slow answer:
    # the counts are exact however long a loaded machine takes to send the 300 hits.
    rules = {name: [ThrottleRule(r.rate, 600.0, r.scope) for r in group] for name, group in RULES.items()}
    clusters = [RedisThrottle(redis, Keys(redis_prefix), op_timeout=30.0) for _ in range(4)]
    results = await asyncio.gather(*(clusters[i % 4].hit("roll", 7, 1, rules["roll"]) for i in range(200)))
    assert sum(r.allowed for r in results) == 5
    guild_results = await asyncio.gather(*(clusters[i % 4].hit("raid", 1000 + i, 9, rules["raid"])
                                           for i in range(50)))
    assert sum(r.allowed for r in guild_results) == 3  # 50 different users, one guild
    global_results = await asyncio.gather(*(clusters[i % 4].hit("broadcast", i, i, rules["broadcast"])
                                            for i in range(50)))
    assert sum(r.allowed for r in global_results) == 2
    assert all(c.shared for c in clusters)  # every answer came from Redis


async def test_retry_after_is_when_the_oldest_use_expires(redis: aioredis.Redis, redis_prefix: str) -> None:
    window = 2.0
    throttle = RedisThrottle(redis, Keys(redis_prefix))
    rule = [ThrottleRule(2, window)]
    t0 = time.monotonic()
    assert (await throttle.hit("x", 1, None, rule)).allowed
    t1 = time.monotonic()
    await asyncio.sleep(window / 2)  # the scenario: the second use comes half a window after the first
    t2 = time.monotonic()
    assert (await throttle.hit("x", 1, None, rule)).allowed
    refused = await throttle.hit("x", 1, None, rule)
    t3 = time.monotonic()
    # retry_after counts down to the moment the first use (between t0 and t1) is a window old
    assert not refused.allowed
    assert t0 + window - t3 - EPS <= refused.retry_after <= t1 + window - t2 + EPS
    await asyncio.sleep(refused.retry_after + EPS)  # the time it said (EPS: the answer is in whole ms)
    assert (await throttle.hit("x", 1, None, rule)).allowed  # … and then it is allowed
    # the second use is still in the window (half a window younger), so that was the last one
    assert not (await throttle.hit("x", 1, None, rule)).allowed


async def test_a_refused_hit_counts_against_no_rule(redis: aioredis.Redis, redis_prefix: str) -> None:
    throttle = RedisThrottle(redis, Keys(redis_prefix))
    assert (await throttle.hit("raid", 1, 9, RULES["raid"])).allowed
    assert not (await throttle.hit("raid", 1, 9, RULES["raid"])).allowed  # user rule: once per 30 s
    assert not (await throttle.hit("raid", 1, 9, RULES["raid"])).allowed
    assert (await throttle.hit("raid", 2, 9, RULES["raid"])).allowed
    assert (await throttle.hit("raid", 3, 9, RULES["raid"])).allowed  # guild: 3
    assert not (await throttle.hit("raid", 4, 9, RULES["raid"])).allowed


async def test_falls_back_to_memory_while_redis_is_down(redis: aioredis.Redis, redis_prefix: str) -> None:
    with ReservedPort() as closed:  # nothing listens there
        dead = aioredis.from_url(f"redis://127.0.0.1:{closed.port}/0", socket_connect_timeout=0.1, retry=None)
        try:
            throttle = RedisThrottle(dead, Keys(redis_prefix), retry_interval=60)
            calls = 0
            call = throttle.batch.call

            def counted(*args: Any) -> Any:
                nonlocal calls
                calls += 1
                return call(*args)

            throttle.batch.call = counted  # type: ignore[method-assign,assignment]
            results = [await throttle.hit("roll", 1, 1, RULES["roll"]) for _ in range(6)]
            assert [r.allowed for r in results] == [True] * 5 + [False]
            assert not throttle.shared
            assert calls == 1  # one failed attempt, then the fallback answers without asking Redis
            assert isinstance(throttle.fallback, MemoryThrottle)
        finally:
            await dead.aclose()
