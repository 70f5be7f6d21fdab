"""The ``redis`` breaker on every connection of a cluster's Redis client, against a Redis killed for real."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from innkeeper.breakers import Breaker, BreakerState
from ipc.redis_breaker import RedisBreakerOpen, guard
from shard.context import redis_client
from tests.support import PrivateRedis

pytestmark = pytest.mark.integration


async def test_a_dead_redis_opens_the_breaker_and_costs_nothing_until_it_answers_again(
        private_redis: PrivateRedis) -> None:
    private_redis.start()
    now = [0.0]  # the breaker's clock: open until the test moves time on, however slow the box
    breaker = Breaker("redis", threshold=3, open_for=0.5, clock=lambda: now[0])
    client = guard(redis_client(private_redis.url), breaker)
    try:
        assert await client.ping()
        async with client.pubsub() as pubsub:  # pub/sub connections go through it too, and waiting is no failure
            await pubsub.subscribe("breaker-test")
            assert await pubsub.get_message(timeout=0.2) is not None  # the subscribe confirmation
            assert await pubsub.get_message(timeout=0.2) is None
        assert breaker.state is BreakerState.CLOSED
        private_redis.kill()
        for _ in range(10):
            try:
                await client.ping()
            except RedisBreakerOpen:
                break
            except RedisConnectionError:
                continue
        assert breaker.state is BreakerState.OPEN
        started = time.perf_counter()
        for _ in range(100):
            with pytest.raises(RedisError):  # what every Redis user already falls back on
                await client.get("x")
        assert time.perf_counter() - started < 5.0  # refused at once: no connection attempts while open
        assert breaker.state is BreakerState.OPEN
        private_redis.start()
        now[0] += 0.6
        assert breaker.state is BreakerState.HALF_OPEN
        assert await client.ping()
        assert breaker.state is BreakerState.CLOSED
    finally:
        await client.aclose()
