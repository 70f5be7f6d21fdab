"""SharedRateLimiter against a real Redis, driven directly (no HTTP): buckets, global, 429s, the guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from innkeeper.backoff import Backoff
from ipc.keys import Keys
from ipc.ratelimit import RequestRefused, ResponseInfo, SharedRateLimiter, Ticket, WaitTooLong
from tests.support import wait_for

pytestmark = pytest.mark.integration

ROUTE = "POST /channels/{channel_id}/messages"


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


async def done_at(coro: object) -> tuple[object, float]:
    """Await ``coro``; return its result and the moment (monotonic) it returned."""
    result = await coro  # type: ignore[misc]
    return result, time.monotonic()


def waits(reason: str | None = None) -> float:
    """How many times limiters in this process waited for a token (``reason``: bucket, global, guard; None: any)."""
    reasons = ("bucket", "global", "guard") if reason is None else (reason,)
    return sum(REGISTRY.get_sample_value("innkeeper_ratelimit_waits_total", {"reason": r}) or 0.0 for r in reasons)


def waited_seconds(reason: str) -> float:
    """Seconds limiters in this process decided to wait for ``reason`` (what they computed, not the clock)."""
    return REGISTRY.get_sample_value("innkeeper_ratelimit_wait_seconds_total", {"reason": reason}) or 0.0


async def test_unknown_bucket_is_probed_one_request_at_a_time(make: type[SharedRateLimiter],
                                                              redis: aioredis.Redis, redis_prefix: str) -> None:
    a, b = make(), make()
    probe = await a.acquire(ROUTE, "10")
    assert isinstance(probe, Ticket) and probe.bucket == f"r:{ROUTE}:10"
    told_to_wait = waits("bucket")
    waiter = asyncio.create_task(b.acquire(ROUTE, "10"))
    await wait_for(lambda: waits("bucket") > told_to_wait, message="the second request told to wait")
    assert not waiter.done()  # the second request waits for the probe's answer
    a.update(probe, ok(5, 4, 1.0))
    second = await asyncio.wait_for(waiter, 2)
    assert second is not None and second.bucket == "h1:10"  # it used the learned hash
    keys = Keys(redis_prefix)
    assert await redis.hget(keys.rl_route_map(), ROUTE) == b"h1"
    state = await redis.hgetall(keys.rl_bucket("h1:10"))
    assert state[b"limit"] == b"5" and state[b"remaining"] == b"3"


async def test_a_bucket_is_shared_and_refills_on_the_servers_reset(make: type[SharedRateLimiter]) -> None:
    limiters = [make() for _ in range(3)]
    probe = await limiters[0].acquire(ROUTE, "1")
    first_answer = time.monotonic()
    limiters[0].update(probe, ok(3, 2, 0.5))
    t1 = await limiters[1].acquire(ROUTE, "1")
    t2 = await limiters[2].acquire(ROUTE, "1")
    limiters[1].update(t1, ok(3, 1, 0.45))
    limiters[2].update(t2, ok(3, 0, 0.45))
    last_answer = time.monotonic()
    # the window is spent: the next request, from any process, waits for the reset — the server's
    # (at least 0.45 s after the first answer), and not a window more than the last answer's
    (ticket, granted) = await done_at(limiters[0].acquire(ROUTE, "1"))
    assert ticket is not None
    assert first_answer + 0.45 - 0.005 <= granted < last_answer + 0.5 + 0.45, granted - first_answer
    # other major parameters are other buckets: no wait at all
    before = waits()
    assert await limiters[1].acquire(ROUTE, "2") is not None
    assert waits() == before


async def test_stale_answers_cannot_refill_a_window(make: type[SharedRateLimiter], redis: aioredis.Redis,
                                                    redis_prefix: str) -> None:
    lim = make()
    probe = await lim.acquire(ROUTE, "1")
    lim.update(probe, ok(2, 1, 0.3))
    late = await lim.acquire(ROUTE, "1")  # taken in window 1, answered after window 2 opened
    fresh = await lim.acquire(ROUTE, "1")  # waits for window 1 to reset (0.3 s), then opens window 2 (provisional)
    assert fresh is not None and late is not None and fresh.window == late.window + 1
    lim.update(late, ok(2, 0, 0.0))  # says "reset now": must not hand out a third token
    state = await redis.hgetall(Keys(redis_prefix).rl_bucket("h1:1"))
    # window 2 started with limit minus the request still in flight from window 1
    assert int(state[b"remaining"]) == 0
    assert int(state[b"win"]) == fresh.window


async def test_global_limit_is_a_sliding_window_across_processes(make: type[SharedRateLimiter]) -> None:
    limiters = [make(global_rate=5, global_window=0.5, global_margin=0.0) for _ in range(2)]
    before = waits()
    start = time.monotonic()
    for i in range(5):
        assert await limiters[i % 2].acquire(f"GET /guilds/{{guild_id}}/x{i}", "1") is not None
    fifth = time.monotonic()
    assert waits() == before  # five in the window: none waited
    # the sixth, from the other process, waits until the first leaves the window
    global_waits = waits("global")
    (_, granted) = await done_at(limiters[1].acquire("GET /other", "1"))
    assert waits("global") > global_waits
    assert start + 0.5 - 0.005 <= granted < fifth + 0.5 + 0.5, granted - start
    # interaction callbacks do not count and do not wait
    before = waits()
    assert await limiters[0].acquire("POST /interactions/{webhook_id}/{webhook_token}/callback",
                                     "9+tok", global_exempt=True, bucket_exempt=True) is not None
    assert waits() == before


async def test_429_scopes(make: type[SharedRateLimiter], redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    lim = make()
    # global: every route waits
    t = await lim.acquire("GET /a", "1")
    answered = time.monotonic()
    lim.update(t, ResponseInfo(429, {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global",
                                     "Retry-After": "1"}, body_retry_after=0.4, body_global=True))
    recorded = time.monotonic()
    (_, granted) = await done_at(lim.acquire("GET /b", "2"))
    assert answered + 0.4 - 0.005 <= granted < recorded + 0.4 + 0.4, granted - answered
    assert lim.invalid_estimate == 1
    # user: only that bucket waits
    t = await lim.acquire("GET /c", "3")
    answered = time.monotonic()
    lim.update(t, ResponseInfo(429, {"X-RateLimit-Scope": "user", "Retry-After": "1",
                                     "X-RateLimit-Bucket": "hc"}, body_retry_after=0.4))
    recorded = time.monotonic()
    await lim.flush()  # reports ride the next round trip; send it now to look at Redis
    assert await redis.hget(keys.rl_route_map(), "GET /c") == b"hc"
    before = waits()
    assert await lim.acquire("GET /d", "3") is not None
    assert waits() == before  # another route: no wait
    (_, granted) = await done_at(lim.acquire("GET /c", "3"))
    assert answered + 0.4 - 0.005 <= granted < recorded + 0.4 + 0.4, granted - answered
    assert lim.invalid_estimate == 2
    # shared: the bucket waits, but it is not an invalid request
    t = await lim.acquire("GET /e", "4")
    answered = time.monotonic()
    lim.update(t, ResponseInfo(429, {"X-RateLimit-Scope": "shared", "Retry-After": "1"},
                               body_retry_after=0.3))
    recorded = time.monotonic()
    (_, granted) = await done_at(lim.acquire("GET /e", "4"))
    assert answered + 0.3 - 0.005 <= granted < recorded + 0.3 + 0.3, granted - answered
    assert lim.invalid_estimate == 2
    # 401 and 403 count
    for status in (401, 403):
        t = await lim.acquire("GET /f", "5")
        lim.update(t, ResponseInfo(status, {}))
    await lim.flush()
    assert lim.invalid_estimate == 4


async def test_invalid_request_guard_slows_then_refuses(make: type[SharedRateLimiter]) -> None:
    lim = make(guard_soft=3, guard_hard=6, guard_max_delay=0.6)
    other = make(guard_soft=3, guard_hard=6, guard_max_delay=0.6)
    for i in range(4):
        t = await lim.acquire("GET /x", str(i))
        lim.update(t, ResponseInfo(403, {}))
    await lim.flush()  # the reports reach Redis with the next round trip: now
    # 4 invalid: a third of the way from soft to hard → a 0.2 s delay, in every process
    decided, start = waited_seconds("guard"), time.monotonic()
    (_, granted) = await done_at(other.acquire("GET /y", "1"))
    assert waited_seconds("guard") - decided == pytest.approx(0.2, abs=0.002)  # what it decided to wait …
    assert granted - start >= 0.2 - 0.005  # … and it did wait that long
    for i in range(2):
        t = await lim.acquire("GET /x", f"b{i}")
        lim.update(t, ResponseInfo(401, {}))
    await lim.flush()
    with pytest.raises(RequestRefused) as info:
        await other.acquire("GET /y", "2")
    assert info.value.estimate == 6
    assert 0 < info.value.retry_after <= 1200  # until the 10-minute estimate drops below the hard limit
    assert "ban" in info.value.message
    # an interaction callback is neither delayed nor refused (the user would see the command fail) ...
    callback = "POST /interactions/{webhook_id}/{webhook_token}/callback"
    start = time.monotonic()
    ticket, granted = await done_at(other.acquire(callback, "1+tabc", global_exempt=True, bucket_exempt=True,
                                                  guard_exempt=True))
    assert isinstance(ticket, Ticket) and granted - start < 0.1
    other.update(ticket, ResponseInfo(403, {}))
    await other.flush()
    assert other.invalid_estimate == 7  # ... and its answer still counts


async def test_max_wait_raises_wait_too_long(make: type[SharedRateLimiter]) -> None:
    """Like discord.py's ``max_ratelimit_timeout`` (the plug-in turns it into ``discord.RateLimited``)."""
    lim = make()
    t = await lim.acquire("GET /a", "1")
    lim.update(t, ResponseInfo(429, {"X-RateLimit-Scope": "user"}, body_retry_after=40))
    with pytest.raises(WaitTooLong) as info:
        await lim.acquire("GET /a", "1", max_wait=30)
    assert info.value.retry_after > 30


async def test_a_request_that_fails_gives_its_slot_back(make: type[SharedRateLimiter]) -> None:
    lim = make()
    probe = await lim.acquire(ROUTE, "7")
    told_to_wait = waits("bucket")
    waiter = asyncio.create_task(lim.acquire(ROUTE, "7"))
    await wait_for(lambda: waits("bucket") > told_to_wait, message="the second request told to wait")
    assert not waiter.done()
    lim.release(probe)  # connection error: no answer will come
    assert await asyncio.wait_for(waiter, 1) is not None


async def test_an_answer_lost_to_a_redis_error_frees_its_slot_on_recovery(make: type[SharedRateLimiter],
                                                                          redis: aioredis.Redis) -> None:
    lim = make(probe_backoff=Backoff(0.05, 0.1))
    probe = await lim.acquire(ROUTE, "8")

    class Broken:
        def __getattr__(self, name: str) -> object:
            return lambda *args, **kwargs: None

        async def execute(self, *args: object, **kwargs: object) -> None:
            raise RedisConnectionError("connection reset")

    redis.pipeline = lambda *args, **kwargs: Broken()  # type: ignore[method-assign]
    try:
        lim.update(probe, ok(5, 4, 1.0))  # never raises into the request path
        await lim.flush()  # the round trip carrying the answer fails
        assert not lim.shared
    finally:
        del redis.pipeline
    await wait_for(lambda: lim.shared, timeout=5, message="shared limiting back")
    # the lost answer's probe slot was freed: the next request is not stuck behind it for inflight_ttl
    assert await asyncio.wait_for(lim.acquire(ROUTE, "8"), 1) is not None
