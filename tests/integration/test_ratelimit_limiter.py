"""SharedRateLimiter against a real Redis, driven directly (no HTTP): buckets, global, 429s, the guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from innkeeper.backoff import Backoff
from ipc.keys import Keys
from ipc.ratelimit import RequestRefused, ResponseInfo, SharedRateLimiter, Ticket, WaitTooLong
from tests.support import wait_for

pytestmark = pytest.mark.integration

ROUTE = "POST /channels/{channel_id}/messages"


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[type[SharedRateLimiter]]:
    made: list[SharedRateLimiter] = []

    def factory(**options: object) -> SharedRateLimiter:
        limiter = SharedRateLimiter(redis, Keys(redis_prefix), **options)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield factory  # type: ignore[misc]
    for limiter in made:
        await limiter.close()


def ok(limit: int, remaining: int, reset_after: float, bucket: str = "h1", status: int = 200) -> ResponseInfo:
    return ResponseInfo(status, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                                 "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket})


async def timed(coro: object) -> tuple[object, float]:
    start = time.monotonic()
    result = await coro  # type: ignore[misc]
    return result, time.monotonic() - start


async def test_unknown_bucket_is_probed_one_request_at_a_time(make: type[SharedRateLimiter],
                                                              redis: aioredis.Redis, redis_prefix: str) -> None:
    a, b = make(), make()
    probe = await a.acquire(ROUTE, "10")
    assert isinstance(probe, Ticket) and probe.bucket == f"r:{ROUTE}:10"
    waiter = asyncio.create_task(b.acquire(ROUTE, "10"))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # the second request waits for the probe's answer
    await a.update(probe, ok(5, 4, 1.0))
    second = await asyncio.wait_for(waiter, 2)
    assert second is not None and second.bucket == "h1:10"  # it used the learned hash
    keys = Keys(redis_prefix)
    assert await redis.hget(keys.rl_route_map(), ROUTE) == b"h1"
    state = await redis.hgetall(keys.rl_bucket("h1:10"))
    assert state[b"limit"] == b"5" and state[b"remaining"] == b"3"


async def test_a_bucket_is_shared_and_refills_on_the_servers_reset(make: type[SharedRateLimiter]) -> None:
    limiters = [make() for _ in range(3)]
    probe = await limiters[0].acquire(ROUTE, "1")
    await limiters[0].update(probe, ok(3, 2, 0.5))
    t1 = await limiters[1].acquire(ROUTE, "1")
    t2 = await limiters[2].acquire(ROUTE, "1")
    await limiters[1].update(t1, ok(3, 1, 0.45))
    await limiters[2].update(t2, ok(3, 0, 0.45))
    # the window is spent: the next request, from any process, waits for the reset
    (ticket, waited) = await timed(limiters[0].acquire(ROUTE, "1"))
    assert ticket is not None
    assert 0.35 < waited < 0.9
    # other major parameters are other buckets
    (_, waited) = await timed(limiters[1].acquire(ROUTE, "2"))
    assert waited < 0.2


async def test_stale_answers_cannot_refill_a_window(make: type[SharedRateLimiter], redis: aioredis.Redis,
                                                    redis_prefix: str) -> None:
    lim = make()
    probe = await lim.acquire(ROUTE, "1")
    await lim.update(probe, ok(2, 1, 0.3))
    late = await lim.acquire(ROUTE, "1")  # taken in window 1, answered after window 2 opened
    await asyncio.sleep(0.35)
    fresh = await lim.acquire(ROUTE, "1")  # opens window 2 (provisional)
    assert fresh is not None and late is not None and fresh.window == late.window + 1
    await lim.update(late, ok(2, 0, 0.0))  # says "reset now": must not hand out a third token
    state = await redis.hgetall(Keys(redis_prefix).rl_bucket("h1:1"))
    # window 2 started with limit minus the request still in flight from window 1
    assert int(state[b"remaining"]) == 0
    assert int(state[b"win"]) == fresh.window


async def test_global_limit_is_a_sliding_window_across_processes(make: type[SharedRateLimiter]) -> None:
    limiters = [make(global_rate=5, global_window=0.5, global_margin=0.0) for _ in range(2)]
    start = time.monotonic()
    for i in range(5):
        assert await limiters[i % 2].acquire(f"GET /guilds/{{guild_id}}/x{i}", "1") is not None
    assert time.monotonic() - start < 0.3
    (_, waited) = await timed(limiters[1].acquire("GET /other", "1"))
    assert 0.2 < waited < 0.8
    # interaction callbacks do not count and do not wait
    (_, waited) = await timed(limiters[0].acquire("POST /interactions/{webhook_id}/{webhook_token}/callback",
                                                  "9+tok", global_exempt=True, bucket_exempt=True))
    assert waited < 0.1


async def test_429_scopes(make: type[SharedRateLimiter], redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    lim = make()
    # global: every route waits
    t = await lim.acquire("GET /a", "1")
    await lim.update(t, ResponseInfo(429, {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global",
                                           "Retry-After": "1"}, body_retry_after=0.4, body_global=True))
    (_, waited) = await timed(lim.acquire("GET /b", "2"))
    assert 0.25 < waited < 0.8
    assert lim.invalid_estimate == 1
    # user: only that bucket waits
    t = await lim.acquire("GET /c", "3")
    await lim.update(t, ResponseInfo(429, {"X-RateLimit-Scope": "user", "Retry-After": "1",
                                           "X-RateLimit-Bucket": "hc"}, body_retry_after=0.4))
    assert await redis.hget(keys.rl_route_map(), "GET /c") == b"hc"
    (_, waited) = await timed(lim.acquire("GET /d", "3"))
    assert waited < 0.15
    (_, waited) = await timed(lim.acquire("GET /c", "3"))
    assert 0.25 < waited < 0.8
    assert lim.invalid_estimate == 2
    # shared: the bucket waits, but it is not an invalid request
    t = await lim.acquire("GET /e", "4")
    await lim.update(t, ResponseInfo(429, {"X-RateLimit-Scope": "shared", "Retry-After": "1"},
                                     body_retry_after=0.3))
    (_, waited) = await timed(lim.acquire("GET /e", "4"))
    assert 0.15 < waited < 0.7
    assert lim.invalid_estimate == 2
    # 401 and 403 count
    for status in (401, 403):
        t = await lim.acquire("GET /f", "5")
        await lim.update(t, ResponseInfo(status, {}))
    assert lim.invalid_estimate == 4


async def test_invalid_request_guard_slows_then_refuses(make: type[SharedRateLimiter]) -> None:
    lim = make(guard_soft=3, guard_hard=6, guard_max_delay=0.6)
    other = make(guard_soft=3, guard_hard=6, guard_max_delay=0.6)
    for i in range(4):
        t = await lim.acquire("GET /x", str(i))
        await lim.update(t, ResponseInfo(403, {}))
    # 4 invalid: a third of the way from soft to hard → ~0.2 s delay, in every process
    (_, waited) = await timed(other.acquire("GET /y", "1"))
    assert 0.12 < waited < 0.6
    for i in range(2):
        t = await lim.acquire("GET /x", f"b{i}")
        await lim.update(t, ResponseInfo(401, {}))
    with pytest.raises(RequestRefused) as info:
        await other.acquire("GET /y", "2")
    assert info.value.estimate == 6
    assert 0 < info.value.retry_after <= 1200  # until the 10-minute estimate drops below the hard limit
    assert "ban" in info.value.message


async def test_max_wait_raises_wait_too_long(make: type[SharedRateLimiter]) -> None:
    """Like discord.py's ``max_ratelimit_timeout`` (the plug-in turns it into ``discord.RateLimited``)."""
    lim = make()
    t = await lim.acquire("GET /a", "1")
    await lim.update(t, ResponseInfo(429, {"X-RateLimit-Scope": "user"}, body_retry_after=40))
    with pytest.raises(WaitTooLong) as info:
        await lim.acquire("GET /a", "1", max_wait=30)
    assert info.value.retry_after > 30


async def test_a_request_that_fails_gives_its_slot_back(make: type[SharedRateLimiter]) -> None:
    lim = make()
    probe = await lim.acquire(ROUTE, "7")
    waiter = asyncio.create_task(lim.acquire(ROUTE, "7"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await lim.release(probe)  # connection error: no answer will come
    assert await asyncio.wait_for(waiter, 1) is not None


async def test_an_answer_lost_to_a_redis_error_frees_its_slot_on_recovery(make: type[SharedRateLimiter]) -> None:
    lim = make(probe_backoff=Backoff(0.05, 0.1))
    probe = await lim.acquire(ROUTE, "8")
    real = lim._update

    async def broken(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("connection reset")

    lim._update = broken  # type: ignore[assignment]
    await lim.update(probe, ok(5, 4, 1.0))  # never raises into the request path
    assert not lim.shared
    lim._update = real
    await wait_for(lambda: lim.shared, timeout=5, message="shared limiting back")
    # the lost answer's probe slot was freed: the next request is not stuck behind it for inflight_ttl
    assert await asyncio.wait_for(lim.acquire(ROUTE, "8"), 1) is not None
