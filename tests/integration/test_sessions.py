"""The session store against a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from ipc.keys import Keys
from ipc.sessions import SessionInfo, SessionStore
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def test_round_trip_and_forget(redis: aioredis.Redis, redis_prefix: str) -> None:
    store = SessionStore(redis, Keys(redis_prefix))
    a = SessionInfo(3, 16, "abc", 42, "ws://127.0.0.1:1/gateway", saved_at=1700000000.5)
    b = SessionInfo(4, 16, "def", None, "ws://127.0.0.1:1/gateway", saved_at=1700000001.0)
    await store.save_many([a, b])
    assert await store.load(3, 16) == a
    assert await store.load_many([3, 4, 5], 16) == {3: a, 4: b}
    await store.forget([3])
    assert await store.load(3, 16) is None
    assert await store.load(4, 16) == b


async def test_other_shard_count_is_not_resumable(redis: aioredis.Redis, redis_prefix: str) -> None:
    store = SessionStore(redis, Keys(redis_prefix))
    await store.save(SessionInfo(1, 8, "abc", 7, "ws://x/gateway"))
    assert await store.load(1, 16) is None
    assert (await store.load(1, 8)) is not None


async def test_sessions_expire(redis: aioredis.Redis, redis_prefix: str) -> None:
    store = SessionStore(redis, Keys(redis_prefix), ttl_s=0.2)
    await store.save(SessionInfo(0, 1, "abc", 1, "ws://x/gateway"))
    assert await store.load(0, 1) is not None

    async def gone() -> bool:
        return await store.load(0, 1) is None
    await wait_for(gone, timeout=5, message="the session to expire")


async def test_malformed_row_is_skipped(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    await redis.hset(keys.session(2), mapping={"shard_count": "x", "session_id": "s"})
    assert await SessionStore(redis, keys).load(2, 1) is None
