"""Fixtures shared by every test: real Redis and PostgreSQL, isolated per test.

Redis: each test gets its own key prefix and its keys are deleted afterwards; nothing is flushed,
so tests can share one server with other users. PostgreSQL: each test that asks for a database gets
a new one, created from ``template0`` and dropped afterwards.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from tests.support import PG_ADMIN_DSN, REDIS_TEST_URL, PrivateRedis, service_missing


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session for the test (raw gateway and REST clients)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def redis_url() -> str:
    return REDIS_TEST_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix for this test; every key under it is deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"ikt-{uuid.uuid4().hex[:12]}"
    client = aioredis.from_url(redis_url)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any connection failure means the service is missing
        await client.aclose()
        service_missing("Redis", exc)
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[object]:
    """A ``redis.asyncio.Redis`` client (bytes responses) for a test using ``redis_prefix``."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _dsn_for(database: str) -> str:
    parts = urlsplit(PG_ADMIN_DSN)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    import asyncpg

    name = f"ikt_{uuid.uuid4().hex[:16]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except Exception as exc:  # noqa: BLE001
        service_missing("PostgreSQL", exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        yield _dsn_for(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A ``redis-server`` of this test's own, not started yet: the test starts, kills and restarts it."""
    if shutil.which("redis-server") is None:
        service_missing("redis-server", "the binary is not on PATH")
    server = PrivateRedis(tmp_path / "logs" / "redis.log")
    try:
        yield server
    finally:
        server.remove()
