"""Alias lookups against PostgreSQL and Redis: cached per guild and per user, negative answers included,
and invalidated on every cluster when aliases change."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from db import aliases as db_aliases
from db.pool import Database
from db.testing import migrated
from ipc.cache import SharedCache
from ipc.keys import Keys
from shard.pipeline.alias_cache import AliasCache
from tests.support import ipc_signer, wait_for

pytestmark = pytest.mark.integration

GUILD, USER, OTHER = 41, 42, 43


def alias_queries() -> float:
    return REGISTRY.get_sample_value("innkeeper_db_query_seconds_count", {"query": "aliases.list"}) or 0.0


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


@pytest.fixture
async def clusters(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[SharedCache, SharedCache]]:
    """The shared caches of two clusters."""
    client = aioredis.from_url(redis_url, client_name=redis_prefix)
    a = SharedCache(client, Keys(redis_prefix), signer=ipc_signer())
    b = SharedCache(client, Keys(redis_prefix), signer=ipc_signer())
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()
    await client.aclose()


async def test_unknown_words_cost_no_query_once_cached(db: Database, clusters: tuple[SharedCache, SharedCache]
                                                       ) -> None:
    a, b = (AliasCache(db, shared=cache) for cache in clusters)
    before = alias_queries()
    for word in ("asdf", "qwer", "asdf", "zzz") * 10:
        assert await a.resolve(GUILD, USER, word) is None
    assert alias_queries() == before + 2  # the user's table and the guild's, once each
    for word in ("asdf", "nope"):
        assert await b.resolve(GUILD, USER, word) is None  # the other cluster reads them from Redis
    assert alias_queries() == before + 2


async def test_a_change_reaches_every_cluster(db: Database, clusters: tuple[SharedCache, SharedCache]) -> None:
    a, b = (AliasCache(db, shared=cache) for cache in clusters)
    shared_b = clusters[1]
    assert await b.resolve(GUILD, USER, "r") is None  # cached as "no alias" on b
    await db_aliases.create_alias(db, "guild", GUILD, "r", "remind 10m stretch", created_by=OTHER)
    await a.invalidate("guild", GUILD)  # what the alias cog does after the write
    await wait_for(lambda: shared_b.invalidations >= 1, message="the invalidation reached cluster b")
    assert await b.resolve(GUILD, USER, "r") == "remind 10m stretch"
    assert await b.resolve(GUILD, OTHER, "r") == "remind 10m stretch"
    # a personal alias wins over the server's, in every server
    await db_aliases.create_alias(db, "user", USER, "r", "ping", created_by=USER)
    await a.invalidate("user", USER)
    await wait_for(lambda: shared_b.invalidations >= 2, message="the second invalidation reached cluster b")
    assert await b.resolve(GUILD, USER, "r") == "ping"
    assert await b.resolve(GUILD + 1, USER, "r") == "ping"
    assert await b.resolve(GUILD, OTHER, "r") == "remind 10m stretch"
    await db_aliases.delete_alias(db, "user", USER, "r")
    await b.invalidate("user", USER)
    assert await b.resolve(GUILD, USER, "r") == "remind 10m stretch"


async def test_without_a_shared_cache_tables_expire_locally(db: Database) -> None:
    now = [0.0]
    cache = AliasCache(db, ttl=30, clock=lambda: now[0])
    before = alias_queries()
    assert await cache.resolve(None, USER, "x") is None
    assert await cache.resolve(None, USER, "x") is None
    assert alias_queries() == before + 1  # a DM: only the user's table
    await db_aliases.create_alias(db, "user", USER, "x", "ping", created_by=USER)
    assert await cache.resolve(None, USER, "x") is None  # cached until it expires or is invalidated
    now[0] = 31
    assert await cache.resolve(None, USER, "x") == "ping"
    await db_aliases.delete_alias(db, "user", USER, "x")
    await cache.invalidate("user", USER)
    assert await cache.resolve(None, USER, "x") is None
