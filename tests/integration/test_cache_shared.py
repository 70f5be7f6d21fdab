"""SharedCache against a real Redis: local layer, invalidation across instances, TTLs, single flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from innkeeper.errors import ErrorCode, IPCError, UsageError
from ipc.cache import SharedCache
from ipc.keys import Keys
from tests.support import ipc_signer, wait_for

pytestmark = pytest.mark.integration

MakeCache = Callable[..., Awaitable[SharedCache]]


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, client_name=redis_prefix)
    yield client
    await client.aclose()


@pytest.fixture
async def make_cache(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[MakeCache]:
    caches: list[SharedCache] = []

    async def factory(**options: object) -> SharedCache:
        cache = SharedCache(redis, Keys(redis_prefix), signer=ipc_signer(), **options)  # type: ignore[arg-type]
        await cache.start()
        caches.append(cache)
        return cache

    yield factory
    for cache in caches:
        await cache.stop()


def requests(ns: str, result: str) -> float:
    return REGISTRY.get_sample_value("innkeeper_cache_requests_total", {"namespace": ns, "result": result}) or 0.0


async def test_set_on_one_instance_invalidates_the_others_local_copy(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set("settings", 42, {"prefix": "!"})
    assert await b.get("settings", 42) == {"prefix": "!"}  # from Redis, now held locally by b
    before = requests("settings", "local_hit")
    assert await b.get("settings", 42) == {"prefix": "!"}
    assert requests("settings", "local_hit") == before + 1
    await a.set("settings", 42, {"prefix": "?"})
    await wait_for(lambda: b.invalidations >= 1, message="invalidation reached b")
    assert await b.get("settings", 42) == {"prefix": "?"}
    await a.delete("settings", 42)
    await wait_for(lambda: b.invalidations >= 2, message="delete reached b")
    assert await b.get("settings", 42, "gone") == "gone"
    assert await a.get("settings", 42) is None


async def test_hit_miss_metrics_and_none_values(make_cache: MakeCache) -> None:
    cache = await make_cache()
    misses, hits = requests("stats", "miss"), requests("stats", "hit")
    assert await cache.get("stats", "x") is None
    assert requests("stats", "miss") == misses + 1
    await cache.set("stats", "empty", None)  # a cached None is a hit, not a miss
    cache.clear_local()
    assert await cache.get("stats", "empty", "default") is None
    assert requests("stats", "hit") == hits + 1


async def _until(moment: float) -> None:
    """Wait until the monotonic clock reaches ``moment`` (a TTL counted from a recorded event)."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def test_ttl_expiry_in_redis_and_in_the_local_layer(make_cache: MakeCache, redis: aioredis.Redis,
                                                          redis_prefix: str) -> None:
    cache = await make_cache(local_ttl=0.2)
    other = await make_cache()
    await cache.set("q", "short", [1, 2, 3], ttl=0.3)
    assert await other.get("q", "short") == [1, 2, 3]
    fetched = time.monotonic()  # other's local copy was made before this, from a key with <= 0.3 s left

    async def gone_from_redis() -> bool:
        return not await redis.exists(Keys(redis_prefix).cache("q", "short"))

    await wait_for(gone_from_redis, timeout=5, message="the key to expire in Redis")
    assert await cache.get("q", "short") is None  # expired in Redis and locally
    await _until(fetched + 0.3)  # by now other's copy is older than the key's TTL allowed
    assert await other.get("q", "short") is None  # other's local copy lived no longer than the key
    await cache.set("q", "long", "v", ttl=60)
    stored = time.monotonic()
    assert cache.local_size() >= 1
    await _until(stored + 0.2)  # local_ttl, counted from the local copy (made before `stored`)
    before = requests("q", "hit")
    assert await cache.get("q", "long") == "v"  # local copy expired after local_ttl; Redis still has it
    assert requests("q", "hit") == before + 1


async def test_get_or_load_runs_the_loader_once(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    calls = 0
    release = asyncio.Event()

    async def loader() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()  # a slow database: every caller arrives while it loads
        return {"n": calls}

    gathered = asyncio.gather(*(a.get_or_load("rows", "k", loader) for _ in range(20)))
    await wait_for(lambda: calls >= 1, message="the loader running")
    release.set()
    results = await gathered
    assert calls == 1 and all(r == {"n": 1} for r in results)
    assert await b.get_or_load("rows", "k", loader) == {"n": 1}  # from Redis: no second load
    assert calls == 1


async def test_concurrent_loaders_on_two_clusters_agree(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    started = 0
    release = asyncio.Event()

    def loader_for(value: str) -> Callable[[], Awaitable[str]]:
        async def loader() -> str:
            nonlocal started
            started += 1
            await release.wait()  # both clusters ask while a load is in progress
            return value
        return loader

    gathered = asyncio.gather(a.get_or_load("agree", 1, loader_for("A")), b.get_or_load("agree", 1, loader_for("B")))
    await wait_for(lambda: started >= 1, message="a loader running")
    release.set()
    ra, rb = await gathered
    assert ra == rb


async def test_loader_errors_reach_every_waiter_and_are_not_cached(make_cache: MakeCache) -> None:
    cache = await make_cache()
    calls = 0
    release = asyncio.Event()

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await release.wait()  # every caller waits on this one load …
        raise RuntimeError("database down")

    gathered = asyncio.gather(*(cache.get_or_load("e", 1, failing) for _ in range(5)), return_exceptions=True)
    await wait_for(lambda: calls >= 1, message="the loader running")
    release.set()
    results = await gathered
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)  # … and gets its error

    async def working() -> int:
        return 7

    assert await cache.get_or_load("e", 1, working) == 7


async def test_bad_input_is_refused(make_cache: MakeCache) -> None:
    cache = await make_cache()
    with pytest.raises(UsageError):
        await cache.set("Bad Namespace", 1, 1)
    with pytest.raises(UsageError):
        await cache.set("ok", 1, object())
    with pytest.raises(UsageError):
        await cache.get("ok", "x" * 500)


async def test_redis_down_reads_fall_back_to_the_loader(make_cache: MakeCache) -> None:
    cache = await make_cache()
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, retry=None)
    broken = SharedCache(dead, Keys("dead"), signer=ipc_signer())
    try:
        async def loader() -> str:
            return "from the database"

        assert await broken.get_or_load("s", 1, loader) == "from the database"
        with pytest.raises(IPCError) as info:
            await broken.get("s", 1)
        assert info.value.code is ErrorCode.REDIS_UNAVAILABLE
        with pytest.raises(IPCError):
            await broken.set("s", 1, "x")
    finally:
        await dead.aclose()
    assert await cache.get("s", 1) is None


async def test_reconnect_clears_the_local_layer(make_cache: MakeCache, redis: aioredis.Redis,
                                                redis_prefix: str) -> None:
    cache = await make_cache()
    await cache.set("r", 1, "v")
    assert cache.local_size() == 1
    for c in await redis.client_list(_type="pubsub"):
        if c.get("name") == redis_prefix:
            await redis.client_kill_filter(_id=c["id"])
    await wait_for(lambda: cache.local_size() == 0, timeout=15, message="local layer cleared after reconnect")


async def test_a_key_in_steady_use_is_refreshed_ahead_and_never_missed_locally(make_cache: MakeCache) -> None:
    cache = await make_cache(local_ttl=0.4, refresh_ahead=0.5)
    other = await make_cache()
    await other.set("cfg", 7, {"prefix": "?"}, ttl=60)
    assert await cache.get("cfg", 7) == {"prefix": "?"}  # from Redis: the local copy lives 0.4 s
    hits = requests("cfg", "hit")
    deadline = time.monotonic() + 1.5  # several local lifetimes
    while time.monotonic() < deadline:
        found, value = cache.peek_local("cfg", 7)  # what the lean message filter asks, synchronously
        assert found and value == {"prefix": "?"}
        await asyncio.sleep(0.02)
    assert cache.refreshes >= 3 and requests("cfg", "hit") >= hits + 3  # refreshed from Redis, in the background
    await other.set("cfg", 7, {"prefix": "$"}, ttl=60)  # an invalidation still drops the copy at once
    await wait_for(lambda: not cache.peek_local("cfg", 7)[0], message="the invalidation to drop the copy")
    assert await cache.get("cfg", 7) == {"prefix": "$"}


async def test_refresh_ahead_never_outlives_the_redis_key(make_cache: MakeCache) -> None:
    cache = await make_cache(local_ttl=10, refresh_ahead=0.9)
    await cache.set("cfg", 8, "v", ttl=0.3)
    cache.clear_local()
    assert await cache.get("cfg", 8) == "v"  # local copy bounded by the key's remaining TTL
    stored = time.monotonic()
    await wait_for(lambda: not cache.peek_local("cfg", 8)[0], timeout=5, message="the copy to expire")
    assert time.monotonic() - stored <= 0.35
    assert await cache.get("cfg", 8) is None
