"""The pool and the query funnel against a real PostgreSQL: metrics, logs, errors, reconnects, health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from prometheus_client import REGISTRY

from db.pool import Database
from innkeeper.errors import DatabaseError, ErrorCode
from innkeeper.loop_lag import LoopLag
from tests.support import PG_ADMIN_DSN, PgProxy, ReservedPort, wait_for

pytestmark = pytest.mark.integration


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(database_url, min_size=1, max_size=3) as database:
        await database.execute("setup", "CREATE TABLE t (id int PRIMARY KEY, name text, data jsonb, n smallint)")
        yield database


async def test_funnel_times_each_query_by_name(db: Database) -> None:
    before = _sample("innkeeper_db_query_seconds_count", query="pool_test.insert")
    for i in range(3):
        await db.execute("pool_test.insert", "INSERT INTO t (id, name) VALUES ($1, $2)", i, f"n{i}")
    assert _sample("innkeeper_db_query_seconds_count", query="pool_test.insert") == before + 3
    rows = await db.fetch("pool_test.all", "SELECT id, name FROM t ORDER BY id")
    assert [(r["id"], r["name"]) for r in rows] == [(0, "n0"), (1, "n1"), (2, "n2")]
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 3
    row = await db.fetchrow("pool_test.one", "SELECT name FROM t WHERE id = $1", 1)
    assert row is not None and row["name"] == "n1"
    await db.executemany("pool_test.many", "INSERT INTO t (id) VALUES ($1)", [(10,), (11,)])
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 5


async def test_jsonb_codec_round_trips(db: Database) -> None:
    data = {"a": [1, 2.5, None, True], "b": {"nested": "é'\""}}
    await db.execute("pool_test.json", "INSERT INTO t (id, data) VALUES (1, $1)", data)
    assert await db.fetchval("pool_test.json_get", "SELECT data FROM t WHERE id = 1") == data


@pytest.mark.parametrize("sql, args, code", [
    ("INSERT INTO t (id) VALUES (1), (1)", (), ErrorCode.DB_CONSTRAINT),
    ("INSERT INTO t (id, name) VALUES (1, $1)", ("nul\x00byte",), ErrorCode.DB_BAD_VALUE),
    ("INSERT INTO t (id, n) VALUES (1, $1)", (40000,), ErrorCode.DB_BAD_VALUE),
    ("INSERT INTO t (id, data) VALUES (1, $1::text::jsonb)", ('{"a": "\\u0000"}',), ErrorCode.DB_BAD_VALUE),
    ("INSERT INTO t (id) VALUES ($1)", (2**40,), ErrorCode.DB_BAD_VALUE),
    ("SELEKT 1", (), ErrorCode.DB_QUERY),
])
async def test_errors_are_translated_and_counted(db: Database, sql: str, args: tuple[object, ...],
                                                 code: ErrorCode) -> None:
    before = _sample("innkeeper_db_query_errors_total", query="pool_test.bad", code=code.value)
    with pytest.raises(DatabaseError) as info:
        await db.execute("pool_test.bad", sql, *args)
    assert info.value.code is code
    assert "pool_test.bad" in info.value.message
    assert _sample("innkeeper_db_query_errors_total", query="pool_test.bad", code=code.value) == before + 1
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 0  # nothing half-written


async def test_slow_queries_and_log_queries(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="db.pool")
    async with Database(database_url, slow_query_ms=300) as db:
        await db.fetchval("pool_test.fast", "SELECT 1")
        await db.fetchval("pool_test.slow", "SELECT pg_sleep(0.5)")
    slow = [r for r in caplog.records if r.levelno == logging.WARNING and getattr(r, "query", "") == "pool_test.slow"]
    assert len(slow) == 1 and "slow query pool_test.slow" in slow[0].getMessage()
    assert not any(getattr(r, "query", "") == "pool_test.fast" for r in caplog.records)
    caplog.clear()
    async with Database(database_url, log_queries=True) as db:
        await db.fetchval("pool_test.logged", "SELECT $1::int", 5)
    logged = [r for r in caplog.records if getattr(r, "query", "") == "pool_test.logged"]
    assert len(logged) == 1 and logged[0].sql == "SELECT $1::int" and logged[0].arg_count == 1  # type: ignore[attr-defined]


async def test_a_busy_event_loop_does_not_make_a_fast_query_slow(database_url: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="db.pool")
    lag = LoopLag(interval_s=0.01)
    await lag.start()
    try:
        async with Database(database_url, slow_query_ms=200, loop_lag=lag) as db:
            await db.fetchval("pool_test.warm", "SELECT 1")
            loop = asyncio.get_running_loop()
            loop.call_soon(time.sleep, 0.4)  # the loop is stuck 0.4 s while the fast query is out
            started = time.perf_counter()
            await db.fetchval("pool_test.blocked", "SELECT 1")
            assert time.perf_counter() - started >= 0.4  # the await did take that long...
            await db.fetchval("pool_test.truly_slow", "SELECT pg_sleep(0.3)")
    finally:
        await lag.stop()
    warned = {getattr(r, "query", "") for r in caplog.records if r.levelno == logging.WARNING}
    assert "pool_test.blocked" not in warned  # ...but PostgreSQL answered at once
    assert "pool_test.truly_slow" in warned  # a query that is slow still says so
    assert max(at_lag for _, at_lag in lag.samples) >= 0.35


async def test_reconnects_after_the_server_drops_connections(db: Database, database_url: str) -> None:
    await db.execute("pool_test.insert", "INSERT INTO t (id) VALUES (1)")
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        # client backends only: an autovacuum worker may visit the fresh database at any moment
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND backend_type = 'client backend'", name)
        assert killed >= 1
        await wait_for(lambda: admin.fetchval(
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            name), message="backends gone")
    finally:
        await admin.close()
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 1
    await db.execute("pool_test.insert", "INSERT INTO t (id) VALUES (2)")
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 2


async def test_a_write_that_loses_its_connection_midway_is_not_retried(db: Database) -> None:
    before = _sample("innkeeper_db_query_retries_total", query="pool_test.suicide")
    with pytest.raises(DatabaseError) as info:
        await db.execute("pool_test.suicide", "SELECT pg_terminate_backend(pg_backend_pid())")
    assert info.value.code is ErrorCode.DB_UNAVAILABLE
    assert _sample("innkeeper_db_query_retries_total", query="pool_test.suicide") == before
    assert (await db.health()).ok  # the pool recovers


async def test_explicit_connection_and_transaction_rollback(db: Database) -> None:
    with pytest.raises(DatabaseError):
        async with db.transaction() as conn:
            await db.execute("pool_test.insert", "INSERT INTO t (id) VALUES (1)", conn=conn)
            await db.execute("pool_test.insert", "INSERT INTO t (id) VALUES (1)", conn=conn)
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 0
    async with db.transaction() as conn:
        await db.execute("pool_test.insert", "INSERT INTO t (id) VALUES (1)", conn=conn)
    assert await db.fetchval("pool_test.count", "SELECT count(*) FROM t") == 1


async def test_unreachable_server_gives_db_unavailable() -> None:
    with ReservedPort() as closed:  # held and never listening: connections are refused
        db = Database(f"postgresql://postgres@127.0.0.1:{closed.port}/x", connect_timeout=0.5)
        with pytest.raises(DatabaseError) as info:
            await db.connect()
        assert info.value.code is ErrorCode.DB_UNAVAILABLE
        health = await db.health()
        assert not health.ok and health.latency_ms is None


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PgProxy]:
    p = PgProxy(database_url)
    try:
        yield p
    finally:
        await p.stop()
        p.reserved.close()


async def test_connect_retries_until_the_server_comes_up(proxy: PgProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="db.pool")
    db = Database(proxy.url, connect_timeout=20)
    connecting = asyncio.create_task(db.connect())

    def refused_and_retrying() -> bool:
        return any("database unreachable" in r.getMessage() for r in caplog.records)

    await wait_for(refused_and_retrying, message="a first attempt refused by the closed port")
    assert not connecting.done()
    await proxy.start()
    try:
        await asyncio.wait_for(connecting, 20)
        health = await db.health()
        assert health.ok and health.latency_ms is not None and health.latency_ms > 0
    finally:
        await db.close()


async def test_queries_retry_with_backoff_while_the_server_restarts(proxy: PgProxy) -> None:
    await proxy.start()
    async with Database(proxy.url, min_size=1, max_size=1, retries=30) as db:
        assert await db.fetchval("pool_test.ping", "SELECT 1") == 1
        await proxy.stop()  # the server "goes away": connections drop, new ones are refused
        await wait_for(lambda: (await_health := db.pool._holders[0]._con) is None or await_health.is_closed(),
                       message="the pool noticed the dropped connection")
        before = _sample("innkeeper_db_query_retries_total", query="pool_test.ping")
        query = asyncio.create_task(db.fetchval("pool_test.ping", "SELECT 2"))
        await wait_for(lambda: _sample("innkeeper_db_query_retries_total", query="pool_test.ping") >= before + 1,
                       message="a retry")
        assert not query.done()
        await proxy.start()  # the server is back
        assert await asyncio.wait_for(query, 30) == 2
        health = await db.health()
        assert health.ok


async def test_the_breaker_opens_on_a_dead_server_fails_fast_then_probes_and_closes(proxy: PgProxy) -> None:
    from db.pool import DatabaseDown
    from innkeeper.breakers import Breaker, BreakerState

    await proxy.start()
    now = [0.0]  # the breaker's clock: it stays open until the test moves time on, however slow the box
    breaker = Breaker("postgres", threshold=3, open_for=0.5, clock=lambda: now[0])
    async with Database(proxy.url, min_size=1, max_size=1, retries=30, breaker=breaker) as db:
        assert await db.fetchval("pool_test.ping", "SELECT 1") == 1
        await proxy.stop()  # the server goes away: refused connections, one failure per attempt
        with pytest.raises(DatabaseDown) as info:
            await db.fetchval("pool_test.ping", "SELECT 2")  # retries stop once the breaker opens
        assert info.value.code is ErrorCode.DB_UNAVAILABLE and info.value.dependency == "postgres"
        assert breaker.state is BreakerState.OPEN
        started = time.perf_counter()
        for _ in range(100):  # while open, a query is refused at once: no connection attempt, no backoff
            with pytest.raises(DatabaseDown):
                await db.fetchval("pool_test.ping", "SELECT 3")
        assert time.perf_counter() - started < 5.0  # 100 rounds of retries with backoff would take minutes
        assert breaker.state is BreakerState.OPEN
        assert not (await db.health()).ok
        await proxy.start()
        now[0] += 0.6
        assert breaker.state is BreakerState.HALF_OPEN
        assert await db.fetchval("pool_test.ping", "SELECT 4") == 4  # the probe
        assert breaker.state is BreakerState.CLOSED


async def test_retries_stop_at_the_commands_deadline(proxy: PgProxy) -> None:
    from innkeeper import deadline

    await proxy.start()
    async with Database(proxy.url, min_size=1, max_size=1, retries=1000) as db:
        assert await db.fetchval("pool_test.ping", "SELECT 1") == 1
        await proxy.stop()
        started = time.perf_counter()
        with deadline.within(0.5), pytest.raises(DatabaseError) as info:
            await db.fetchval("pool_test.ping", "SELECT 2")  # without a deadline: a thousand retries
        assert info.value.code is ErrorCode.DB_UNAVAILABLE
        assert time.perf_counter() - started < 5.0  # gave up with its own error (a thousand retries: minutes)
