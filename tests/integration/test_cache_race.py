"""A revocation is never undone by a cache race: loads that read before a write are never stored after it.

Each interleaving is forced with events inside the loader: the loader reads the old value, then
the write and its invalidation happen, then the loader is let go and tries to store what it read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from db import permissions as db_permissions
from db.pool import Database
from db.testing import migrated
from innkeeper.errors import ErrorCode, IPCError
from ipc.cache import SharedCache
from ipc.keys import Keys
from shard.pipeline.config import GuildConfig
from shard.pipeline.levels import Level
from shard.pipeline.store import CACHE_NAMESPACE, GuildConfigStore, load_guild_config
from tests.support import PrivateRedis, ipc_signer, wait_for

pytestmark = pytest.mark.integration

MakeCache = Callable[..., Awaitable[SharedCache]]
GUILD = 424242
ROLE = 777


@pytest.fixture
async def make_cache(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[MakeCache]:
    caches: list[SharedCache] = []

    async def factory(*, listen: bool = True, **options: Any) -> SharedCache:
        cache = SharedCache(redis, Keys(redis_prefix), signer=ipc_signer(), **options)
        if listen:
            await cache.start()
        caches.append(cache)
        return cache

    yield factory
    for cache in caches:
        await cache.stop()


class Source:
    """The database stand-in: a value, and a loader that can be held after it has read it."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = True
        self.loads = 0

    async def load(self) -> str:
        self.loads += 1
        seen = self.value  # the database read happens here …
        if self.hold:
            self.hold = False
            self.read.set()
            await self.release.wait()  # … and the store only after the test let it go
        return seen


async def test_a_load_that_read_before_the_write_is_not_stored_after_its_invalidation(
        make_cache: MakeCache, redis: aioredis.Redis, redis_prefix: str) -> None:
    loading = await make_cache(listen=False)  # hears no invalidation: only the generation check can save it
    writer, reader = await make_cache(), await make_cache()
    source = Source("admin")
    first = asyncio.create_task(loading.get_or_load("guildcfg", 1, source.load))
    await source.read.wait()  # the loader has read "admin"
    source.value = "revoked"  # the write …
    await writer.delete("guildcfg", 1)  # … and its invalidation
    source.release.set()
    assert await first == "admin"  # its own caller overlapped the write; nobody else may see it
    assert await redis.get(Keys(redis_prefix).cache("guildcfg", "1")) is None  # not stored in Redis
    assert loading.local_size() == 0  # nor in the loading process's local layer
    for cache in (loading, writer, reader):
        assert await cache.get_or_load("guildcfg", 1, source.load) == "revoked"
    assert await reader.get("guildcfg", 1) == "revoked"


async def test_an_explicit_write_is_not_replaced_by_an_older_load_after_redis_evicted_it(
        make_cache: MakeCache, redis: aioredis.Redis, redis_prefix: str) -> None:
    loading, writer = await make_cache(listen=False), await make_cache()
    source = Source("old")
    first = asyncio.create_task(loading.get_or_load("guildcfg", 2, source.load))
    await source.read.wait()
    await writer.set("guildcfg", 2, "new")
    await redis.delete(Keys(redis_prefix).cache("guildcfg", "2"))  # evicted (maxmemory) before the load stores
    source.release.set()
    await first
    assert await redis.get(Keys(redis_prefix).cache("guildcfg", "2")) is None  # the older load stored nothing
    source.value = "new"
    assert await writer.get_or_load("guildcfg", 2, source.load) == "new"


async def test_a_caller_after_the_invalidation_does_not_join_the_older_load(make_cache: MakeCache) -> None:
    loading, writer = await make_cache(), await make_cache()
    source = Source("admin")
    first = asyncio.create_task(loading.get_or_load("guildcfg", 3, source.load))
    await source.read.wait()
    source.value = "revoked"
    await writer.delete("guildcfg", 3)
    await wait_for(lambda: loading.invalidations >= 1, message="the invalidation reached the loading process")
    # a command arriving now, in the process where the old load is still running, must see the write
    assert await loading.get_or_load("guildcfg", 3, source.load) == "revoked"
    source.release.set()
    assert await first == "admin"
    assert await loading.get_or_load("guildcfg", 3, source.load) == "revoked"
    assert await writer.get("guildcfg", 3) == "revoked"




async def test_an_invalidation_redis_missed_is_retried_and_never_served_meanwhile(
        private_redis: PrivateRedis) -> None:
    private_redis.start()
    keys = Keys("missed")
    admin = aioredis.from_url(private_redis.url)
    mine = aioredis.from_url(private_redis.url, socket_timeout=0.5)
    theirs = aioredis.from_url(private_redis.url)
    cache, other = SharedCache(mine, keys, signer=ipc_signer()), SharedCache(theirs, keys, signer=ipc_signer())
    await cache.start()
    await other.start()
    try:
        await cache.set("guildcfg", 4, "admin")
        assert await other.get("guildcfg", 4) == "admin"
        await admin.client_pause(60_000, all=False)  # writes hang (reads go on): the invalidation cannot land
        with pytest.raises(IPCError) as info:
            await cache.delete("guildcfg", 4)
        assert info.value.code is ErrorCode.REDIS_UNAVAILABLE
        assert cache.pending_invalidations == 1 and cache.local_size() == 0
        assert await admin.get(keys.cache("guildcfg", "4")) is not None  # Redis still holds "admin" …
        source = Source("revoked")
        source.hold = False
        # … but this process never serves it while its invalidation is owed: the loader answers
        assert await cache.get_or_load("guildcfg", 4, source.load) == "revoked"
        assert source.loads == 1
        await admin.client_unpause()  # Redis takes writes again: the owed invalidation goes out by itself
        await wait_for(lambda: cache.pending_invalidations == 0, timeout=30, message="the invalidation retried")
        assert await admin.get(keys.cache("guildcfg", "4")) is None
        await wait_for(lambda: other.invalidations >= 1, message="the retried invalidation reached the other process")
        assert await other.get("guildcfg", 4) is None
    finally:
        await cache.stop()
        await other.stop()
        for client in (admin, mine, theirs):
            await client.aclose()


# --- the guild configuration store on PostgreSQL: a revoked level stays revoked ---------------------
@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


async def test_a_revoked_level_is_not_restored_by_a_load_that_read_before_the_revocation(
        db: Database, make_cache: MakeCache) -> None:
    await db_permissions.set_role_level(db, GUILD, ROLE, int(Level.ADMIN))
    read, release = asyncio.Event(), asyncio.Event()
    held = True

    async def load(database: Database, guild_id: int) -> GuildConfig:
        nonlocal held
        cfg = await load_guild_config(database, guild_id)
        if held:
            held = False
            read.set()
            await release.wait()  # the revocation happens after this read, before the store
        return cfg

    shared_a, shared_c = await make_cache(), await make_cache()
    cluster_a = GuildConfigStore(db, shared=shared_a, load=load)
    cluster_b = GuildConfigStore(db, shared=await make_cache())
    cluster_c = GuildConfigStore(db, shared=shared_c)
    stale = asyncio.create_task(cluster_a.get(GUILD))
    await read.wait()
    await db_permissions.remove_role_level(db, GUILD, ROLE)  # the revocation …
    await cluster_b.invalidate(GUILD)  # … and its invalidation, from another cluster
    await wait_for(lambda: shared_a.invalidations >= 1, message="cluster A heard the invalidation")
    release.set()
    assert (await stale).role_levels == {ROLE: Level.ADMIN}  # the overlapping request only
    for store in (cluster_a, cluster_b, cluster_c):
        assert (await store.get(GUILD)).role_levels == {}, "the revoked level came back"
    assert (await shared_c.get(CACHE_NAMESPACE, GUILD))["r"] == []  # what Redis holds is the new one


async def test_without_the_shared_cache_a_load_that_overlapped_a_write_is_not_remembered(db: Database) -> None:
    await db_permissions.set_role_level(db, GUILD, ROLE, int(Level.ADMIN))
    read, release = asyncio.Event(), asyncio.Event()

    async def load(database: Database, guild_id: int) -> GuildConfig:
        cfg = await load_guild_config(database, guild_id)
        if not read.is_set():
            read.set()
            await release.wait()
        return cfg

    store = GuildConfigStore(db, load=load)
    stale = asyncio.create_task(store.get(GUILD))
    await read.wait()
    await db_permissions.remove_role_level(db, GUILD, ROLE)
    await store.invalidate(GUILD)
    release.set()
    assert (await stale).role_levels == {ROLE: Level.ADMIN}
    assert (await store.get(GUILD)).role_levels == {}
