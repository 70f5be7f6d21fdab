"""The shared limiter's fast path against a real Redis: leases, round trips, and no lock across a Redis call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from ipc.keys import Keys
from ipc.ratelimit import ResponseInfo, SharedRateLimiter

pytestmark = pytest.mark.integration

ROUTE = "POST /channels/{channel_id}/messages"
CALLBACK = "POST /interactions/{webhook_id}/{webhook_token}/callback"


@pytest.fixture
async def make(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[Callable[..., SharedRateLimiter]]:
    made: list[SharedRateLimiter] = []

    def factory(**options: Any) -> SharedRateLimiter:
        limiter = SharedRateLimiter(redis, Keys(redis_prefix), **options)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.close()


def ok(limit: int, remaining: int, reset_after: float, bucket: str = "h1") -> ResponseInfo:
    return ResponseInfo(200, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                              "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket})


def local_grants() -> float:
    return REGISTRY.get_sample_value("innkeeper_ratelimit_requests_total", {"path": "local"}) or 0.0


async def learned(lim: SharedRateLimiter, major: str, limit: int = 50) -> None:
    """Probe the bucket of ``major`` once so that its limit and hash are known."""
    probe = await lim.acquire(ROUTE, major)
    lim.update(probe, ok(limit, limit - 1, 5.0))
    await lim.flush()


async def test_a_burst_is_served_from_leases_with_fewer_round_trips_than_requests(
        make: Callable[..., SharedRateLimiter]) -> None:
    lim = make(lease_ttl=1.0)  # long enough that a loaded machine does not let the leases lapse
    await learned(lim, "1")
    calls, requests, local = lim.redis_calls, lim.requests, local_grants()
    remaining = 48
    for _ in range(30):  # one request after another, each answered: a busy channel
        ticket = await lim.acquire(ROUTE, "1")
        assert ticket is not None
        lim.update(ticket, ok(50, remaining, 4.5))
        remaining -= 1
    assert lim.requests - requests == 30
    assert local_grants() - local >= 15  # sent with no Redis call at all (25 here on a quiet machine)
    assert lim.redis_calls - calls <= 15  # one round trip per claim, answers and settlements riding along


async def test_one_round_trip_carries_the_claims_of_many_buckets(make: Callable[..., SharedRateLimiter]) -> None:
    lim = make()
    await learned(lim, "0")  # the scripts are loaded, the route's hash is known
    calls = lim.redis_calls
    tickets = await asyncio.gather(*(lim.acquire(ROUTE, str(i)) for i in range(1, 21)))
    assert all(t is not None for t in tickets)
    assert lim.redis_calls - calls == 1  # 20 requests on 20 buckets: one pipeline


async def test_no_request_waits_behind_another_buckets_slow_round_trip(make: Callable[..., SharedRateLimiter]) -> None:
    lim = make()
    await learned(lim, "fast")
    slow_in_flight, release = asyncio.Event(), asyncio.Event()
    rounds = lim._rounds
    real = rounds._pipeline

    async def pipeline(commands: list[tuple[str, list[str], list[str]]]) -> list[Any]:
        if any("slow" in args for _, _, args in commands):
            slow_in_flight.set()
            await release.wait()  # Redis takes its time with this one
        return await real(commands)

    rounds._pipeline = pipeline  # type: ignore[method-assign]
    slow = asyncio.create_task(lim.acquire(ROUTE, "slow"))
    await asyncio.wait_for(slow_in_flight.wait(), 2)
    try:
        # another bucket's request goes out in a round trip of its own meanwhile ...
        assert await asyncio.wait_for(lim.acquire(ROUTE, "fast"), 2) is not None
        # ... an interaction callback needs no round trip at all ...
        assert await asyncio.wait_for(lim.acquire(CALLBACK, "1+tabc", global_exempt=True, bucket_exempt=True,
                                                  guard_exempt=True), 1) is not None
        # ... and recording a response never waits for Redis
        ticket = await lim.acquire(ROUTE, "fast")
        lim.update(ticket, ok(50, 47, 4.0))
        assert not slow.done()
    finally:
        release.set()
    assert await asyncio.wait_for(slow, 2) is not None


async def test_a_stopping_cluster_gives_its_leases_back(make: Callable[..., SharedRateLimiter],
                                                         redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    lim = make(lease_ttl=5.0)
    await learned(lim, "1")
    for _ in range(20):  # demand enough for a lease
        lim._book.note_demand((ROUTE, "1"), False, asyncio.get_running_loop().time())
    ticket = await lim.acquire(ROUTE, "1")
    assert ticket is not None
    held_slots = await redis.zcard(keys.rl_global())
    remaining = int(await redis.hget(keys.rl_bucket("h1:1"), "remaining"))
    assert held_slots > 2 and remaining < 48  # the claim leased global slots and bucket tokens beyond its own
    lim.update(ticket, ok(50, 47, 4.5))
    await lim.close()
    assert await redis.zcard(keys.rl_global()) == 2  # only the probe and the request that went out
    assert int(await redis.hget(keys.rl_bucket("h1:1"), "remaining")) == 48  # unused tokens refunded
    assert await redis.zcard(keys.rl_bucket_inflight("h1:1")) == 0


async def test_above_the_guards_soft_threshold_every_request_asks_redis(
        make: Callable[..., SharedRateLimiter]) -> None:
    lim = make(guard_soft=2, guard_hard=1000, guard_max_delay=0.002, lease_ttl=1.0)
    await learned(lim, "1")
    for i in range(3):
        t = await lim.acquire("GET /x", str(i))
        lim.update(t, ResponseInfo(403, {}))
    await lim.flush()
    assert lim.invalid_estimate == 3
    calls, local = lim.redis_calls, local_grants()
    for i in range(10):
        ticket = await lim.acquire(ROUTE, "1")
        lim.update(ticket, ok(50, 47 - i, 4.5))
    assert local_grants() == local  # no lease: the guard decides for each request
    assert lim.redis_calls - calls >= 10
