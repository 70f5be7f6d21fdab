"""The asyncpg pool and the one query funnel every query goes through.

:class:`Database` owns an asyncpg pool built from ``DATABASE_URL``. Each connection gets the JSON
codecs in the pool's ``init`` (``json``/``jsonb`` <-> Python objects). Query modules never call
asyncpg directly: they call :meth:`Database.fetch`, :meth:`~Database.fetchrow`,
:meth:`~Database.fetchval`, :meth:`~Database.execute` or :meth:`~Database.executemany` with a
stable query *name* and SQL built by pypika at import time (:data:`db.sql.Sql`, from
:func:`db.sql.built`; mypy refuses plain text). The funnel then

* times the query into the ``innkeeper_db_query_seconds{query=NAME}`` histogram,
* logs it when slower than ``INNKEEPER_SLOW_QUERY_MS`` (and every query when
  ``INNKEEPER_LOG_QUERIES=1``; the SQL and the number of arguments, never their values). With a
  :class:`~innkeeper.loop_lag.LoopLag` (every cluster has one), the event loop's lag over the
  query's span is taken off first: a query is slow for what PostgreSQL and the network took, not
  for the turns the busy loop took to come back to it (the log line gives both),
* counts failures in ``innkeeper_db_query_errors_total{query, code}``,
* translates asyncpg's exceptions into :class:`~innkeeper.errors.DatabaseError` (see
  :mod:`db.error_translation`), and
* retries with jittered exponential backoff when the server went away and the query is known not
  to have run (or is a read), so a PostgreSQL restart costs latency, not errors; a retry whose
  delay would end past the deadline of the command it serves (:mod:`innkeeper.deadline`) is not
  made: the query fails with its own error instead of being cut off, and
* asks the ``postgres`` circuit breaker (:class:`~innkeeper.breakers.Breaker`, when given) before
  each attempt: while it is open the query fails at once with :class:`DatabaseDown` (a
  ``DB_UNAVAILABLE`` :class:`~innkeeper.errors.DatabaseError` that is also a
  :class:`~innkeeper.breakers.DependencyDown`), so a database that is down costs microseconds
  per query, not connection attempts. An attempt that could not reach the server, or that was
  cancelled after running longer than ``slow_call_s`` (a hung server), counts as a failure; any
  answer of the server, errors included, as a success.

Every call takes an optional ``conn``: pass one to run inside your transaction, or let the funnel
acquire one from the pool (RoboDanny style). Metrics are module-level so any number of
:class:`Database` objects can live in one process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
from prometheus_client import Counter, Histogram

from innkeeper import deadline
from innkeeper.backoff import Backoff
from innkeeper.breakers import DependencyDown
from innkeeper.errors import DatabaseError, ErrorCode

from . import error_translation as errors
from .sql import PgQuery, Sql, built

if TYPE_CHECKING:
    from innkeeper.breakers import Breaker, Permit
    from innkeeper.loop_lag import LoopLag
    from innkeeper.settings import Settings

__all__ = ("Database", "DatabaseDown", "Health", "Conn", "QUERY_SECONDS", "QUERY_ERRORS", "QUERY_RETRIES",
           "json_dumps")

_log = logging.getLogger(__name__)

#: A connection from :meth:`Database.acquire` or a bare ``asyncpg.connect``.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

QUERY_SECONDS = Histogram(
    "innkeeper_db_query_seconds", "Time spent in each named database query (the event loop's lag taken off)",
    ["query"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUERY_ERRORS = Counter("innkeeper_db_query_errors_total", "Failed database queries by error code",
                       ["query", "code"])
QUERY_RETRIES = Counter("innkeeper_db_query_retries_total",
                        "Queries retried after the connection or server went away", ["query"])
_OBSERVERS: dict[str, Callable[[float], None]] = {}


def _observer(name: str) -> Callable[[float], None]:
    """The query-time histogram's child for ``name``, looked up once per query name."""
    observe = _OBSERVERS.get(name)
    if observe is None:
        observe = _OBSERVERS[name] = QUERY_SECONDS.labels(name).observe
    return observe


SLOW_QUERIES = Counter("innkeeper_db_slow_queries_total", "Queries slower than the slow-query threshold",
                       ["query"])

_HEALTH = built(PgQuery.select(1))


def json_dumps(value: Any) -> str:
    """Compact JSON used for every json/jsonb parameter."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(typename, schema="pg_catalog", encoder=json_dumps, decoder=json.loads,
                                  format="text")


class DatabaseDown(DatabaseError, DependencyDown):
    """The ``postgres`` breaker is open: the query was refused without trying (``DB_UNAVAILABLE``).

    A :class:`~innkeeper.errors.DatabaseError`, so every fallback written for an unreachable
    database (the guild configuration's last known copy, the usage buffer) applies unchanged, and a
    :class:`~innkeeper.breakers.DependencyDown`, so a command tells its user what is down.
    """

    def __init__(self, retry_after: float) -> None:
        DependencyDown.__init__(self, "postgres", retry_after,
                                message=f"the database is down (circuit breaker open); queries resume in "
                                        f"{retry_after:.1f}s")
        self.code = ErrorCode.DB_UNAVAILABLE


def _unreachable(exc: BaseException, lost: bool) -> bool:
    """Whether ``exc`` says the server could not be reached (as opposed to an error it answered)."""
    if lost:
        return True
    if isinstance(exc, DatabaseError):
        return exc.code is ErrorCode.DB_UNAVAILABLE
    return errors.is_connection_error(exc)


def _is_lost(conn: Conn) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # the pool already detached the proxy of a dropped connection
        return True


class Health:
    """The answer of :meth:`Database.health`."""

    __slots__ = ("ok", "latency_ms", "error")

    def __init__(self, ok: bool, latency_ms: float | None, error: str | None = None) -> None:
        self.ok = ok
        self.latency_ms = latency_ms
        self.error = error

    def __repr__(self) -> str:
        return f"Health(ok={self.ok}, latency_ms={self.latency_ms}, error={self.error!r})"


class Database:
    """A pool plus the query funnel.

    Parameters
    ----------
    dsn:
        A ``postgresql://`` URL.
    min_size, max_size:
        Pool bounds (``INNKEEPER_DB_POOL_MIN`` / ``_MAX``).
    slow_query_ms:
        Queries slower than this are logged at WARNING.
    log_queries:
        Log every query at INFO (``INNKEEPER_LOG_QUERIES=1``).
    retries:
        How many times a query is retried after a connection failure.
    connect_timeout:
        How long :meth:`connect` keeps retrying while the server is unreachable.
    loop_lag:
        The process's event-loop lag probe: its lag over a query's span is not the query's time.
    breaker:
        The ``postgres`` circuit breaker asked before every attempt, or None.
    slow_call_s:
        An attempt cancelled after running this long counts as a failure for the breaker.
    """

    __slots__ = ("dsn", "min_size", "max_size", "slow_query_s", "log_queries", "retries", "connect_timeout",
                 "loop_lag", "breaker", "slow_call_s", "_pool")

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, slow_query_ms: float = 250.0,
                 log_queries: bool = False, retries: int = 4, connect_timeout: float = 30.0,
                 loop_lag: LoopLag | None = None, breaker: Breaker | None = None, slow_call_s: float = 2.0) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.slow_query_s = slow_query_ms / 1000
        self.log_queries = log_queries
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.loop_lag = loop_lag
        self.breaker = breaker
        self.slow_call_s = slow_call_s
        self._pool: asyncpg.Pool | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Database:
        """A :class:`Database` configured from ``settings`` (not yet connected)."""
        kwargs: dict[str, Any] = {
            "min_size": settings.db_pool_min, "max_size": settings.db_pool_max,
            "slow_query_ms": settings.slow_query_ms, "log_queries": settings.log_queries,
        }
        kwargs.update(overrides)
        return cls(settings.database_url, **kwargs)

    # --- lifecycle ------------------------------------------------------------------------------
    async def connect(self) -> Database:
        """Create the pool, retrying with backoff while the server is unreachable.

        Raises
        ------
        DatabaseError
            ``DB_UNAVAILABLE`` when the server stays unreachable for ``connect_timeout`` seconds or
            refuses us for a reason retrying cannot fix (unknown database, bad password).
        """
        if self._pool is not None:
            return self
        deadline = time.monotonic() + self.connect_timeout
        backoff = Backoff(0.1, 2.0)
        while True:
            try:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=self.min_size, max_size=self.max_size, init=_init_connection, timeout=10,
                )
                return self
            except Exception as exc:
                delay = backoff.next()
                retry = errors.is_safe_to_retry(exc, idempotent=True) or isinstance(exc, OSError | TimeoutError)
                if not retry or time.monotonic() + delay > deadline:
                    err = errors.translate(exc, query="connect")
                    err.code = ErrorCode.DB_UNAVAILABLE  # whatever the reason, there is no database to use
                    raise err from exc
                _log.warning("database unreachable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Close the pool, waiting for connections in use to be released."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Database:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool; raises when :meth:`connect` was not called."""
        if self._pool is None:
            raise DatabaseError("the database pool is not connected", code=ErrorCode.DB_UNAVAILABLE)
        return self._pool

    # --- connections ----------------------------------------------------------------------------
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Conn]:
        """A pooled connection; connection failures become ``DB_UNAVAILABLE`` after retries."""
        backoff: Backoff | None = None  # made on the first retry: the happy path stays cheap
        attempt = 0
        while True:
            permit = self._admit()
            try:
                ctx = self.pool.acquire()
                conn = await ctx.__aenter__()
                self._settle(permit, None)
                break
            except BaseException as exc:
                self._settle(permit, exc)
                if not isinstance(exc, Exception):
                    raise
                if attempt < self.retries and errors.is_safe_to_retry(exc, idempotent=True):
                    backoff = backoff or Backoff(0.05, 1.0)
                    delay = backoff.next()
                    if deadline.allows(delay):
                        attempt += 1
                        await asyncio.sleep(delay)
                        continue
                raise errors.translate(exc, query="acquire") from exc
        try:
            yield conn
        finally:
            await ctx.__aexit__(None, None, None)

    @asynccontextmanager
    async def transaction(self, *, isolation: Literal["read_committed", "repeatable_read", "serializable"]
                          = "read_committed") -> AsyncIterator[Conn]:
        """A pooled connection inside a transaction, committed on success and rolled back on error."""
        async with self.acquire() as conn:
            tx = conn.transaction(isolation=isolation)
            try:
                await tx.start()
            except Exception as exc:
                raise errors.translate(exc, query="begin") from exc
            try:
                yield conn
            except BaseException:
                try:
                    await tx.rollback()
                except Exception:  # noqa: BLE001 - the connection may be gone; the original error matters
                    _log.debug("rollback failed", exc_info=True)
                raise
            try:
                await tx.commit()
            except Exception as exc:
                raise errors.translate(exc, query="commit") from exc

    # --- the funnel -----------------------------------------------------------------------------
    async def fetch(self, name: str, sql: Sql, *args: Any, conn: Conn | None = None,
                    timeout: float | None = None) -> list[asyncpg.Record]:
        """Run a query and return all its rows."""
        result: list[asyncpg.Record] = await self._run("fetch", name, sql, args, conn, timeout, True)
        return result

    async def fetchrow(self, name: str, sql: Sql, *args: Any, conn: Conn | None = None,
                       timeout: float | None = None, idempotent: bool = True) -> asyncpg.Record | None:
        """Run a query and return its first row, or ``None``.

        Pass ``idempotent=False`` for ``INSERT ... RETURNING`` and similar writes, so a dropped
        connection is not retried blindly.
        """
        result: asyncpg.Record | None = await self._run("fetchrow", name, sql, args, conn, timeout, idempotent)
        return result

    async def fetchval(self, name: str, sql: Sql, *args: Any, conn: Conn | None = None,
                       timeout: float | None = None, idempotent: bool = True) -> Any:
        """Run a query and return the first column of its first row."""
        return await self._run("fetchval", name, sql, args, conn, timeout, idempotent)

    async def execute(self, name: str, sql: Sql, *args: Any, conn: Conn | None = None,
                      timeout: float | None = None, idempotent: bool = False) -> str:
        """Run a statement and return its status (``"UPDATE 3"``)."""
        result: str = await self._run("execute", name, sql, args, conn, timeout, idempotent)
        return result

    async def executemany(self, name: str, sql: Sql, rows: Iterable[Sequence[Any]], *, conn: Conn | None = None,
                          timeout: float | None = None) -> None:
        """Run one statement for each argument tuple in ``rows`` (one round trip per batch)."""
        await self._run("executemany", name, sql, (list(rows),), conn, timeout, False)

    async def _run(self, kind: str, name: str, sql: Sql, args: tuple[Any, ...], conn: Conn | None,
                   timeout: float | None, idempotent: bool) -> Any:
        if conn is not None:
            try:
                return await self._timed(kind, name, sql, args, conn, timeout)
            except Exception as exc:
                raise self._failed(name, exc) from exc
        backoff: Backoff | None = None  # made on the first retry: the happy path stays cheap
        attempt = 0
        while True:
            permit = self._admit(name)
            # A connection that is closed after the failure lost the server, whatever asyncpg raised
            # (it sometimes reports a dropped socket as an internal state error).
            lost = False
            try:
                async with self.pool.acquire() as pooled:
                    try:
                        result = await self._timed(kind, name, sql, args, pooled, timeout)
                    except Exception:
                        lost = _is_lost(pooled)
                        raise
                self._settle(permit, None)
                return result
            except DatabaseError as exc:
                self._settle(permit, exc)
                raise
            except BaseException as exc:
                self._settle(permit, exc, lost)
                if not isinstance(exc, Exception):
                    raise
                if attempt < self.retries and (errors.is_safe_to_retry(exc, idempotent=idempotent)
                                               or (lost and idempotent)):
                    backoff = backoff or Backoff(0.05, 1.0)
                    delay = backoff.next()
                    if deadline.allows(delay):
                        attempt += 1
                        QUERY_RETRIES.labels(name).inc()
                        _log.warning("query %s lost its connection (%s); retry %d in %.2fs", name, exc, attempt,
                                     delay, extra={"query": name})
                        await asyncio.sleep(delay)
                        continue
                raise self._failed(name, exc, lost=lost) from exc

    def _admit(self, name: str = "acquire") -> Permit | None:
        """A permit of the ``postgres`` breaker for one attempt; :class:`DatabaseDown` while it is open."""
        breaker = self.breaker
        if breaker is None:
            return None
        permit = breaker.enter()
        if permit is None:
            QUERY_ERRORS.labels(name, ErrorCode.DB_UNAVAILABLE.value).inc()
            raise DatabaseDown(breaker.retry_after())
        return permit

    def _settle(self, permit: Permit | None, exc: BaseException | None, lost: bool = False) -> None:
        """Tell the breaker how the attempt went (see the module docstring)."""
        breaker = self.breaker
        if permit is None or breaker is None:
            return
        if exc is None:
            breaker.success(permit)
        elif not isinstance(exc, Exception):  # cancelled: a hung server, or only an impatient caller
            if breaker.age(permit) >= self.slow_call_s:
                breaker.failure(permit)
            else:
                breaker.release(permit)
        elif _unreachable(exc, lost):
            breaker.failure(permit)
        else:
            breaker.success(permit)

    async def _timed(self, kind: str, name: str, sql: Sql, args: tuple[Any, ...], conn: Conn,
                     timeout: float | None) -> Any:
        method = getattr(conn, kind)
        start = time.perf_counter()
        try:
            return await method(sql, *args, timeout=timeout)
        finally:
            elapsed = time.perf_counter() - start
            lag = 0.0 if self.loop_lag is None else min(elapsed, self.loop_lag.worst_since(start))
            _observer(name)(elapsed - lag)
            if elapsed - lag > self.slow_query_s:
                SLOW_QUERIES.labels(name).inc()
                _log.warning("slow query %s took %.1f ms (and %.1f ms more waiting for the busy event loop)",
                             name, (elapsed - lag) * 1000, lag * 1000,
                             extra={"query": name, "duration_ms": round((elapsed - lag) * 1000, 2),
                                    "loop_lag_ms": round(lag * 1000, 2)})
            elif self.log_queries:
                _log.info("query %s took %.2f ms", name, elapsed * 1000,
                          extra={"query": name, "sql": sql, "arg_count": len(args),
                                 "duration_ms": round(elapsed * 1000, 3)})

    @staticmethod
    def _failed(name: str, exc: BaseException, *, lost: bool = False) -> DatabaseError:
        err = errors.translate(exc, query=name)
        if lost and err.code is ErrorCode.DB_QUERY:
            err.code = ErrorCode.DB_UNAVAILABLE
        QUERY_ERRORS.labels(name, err.code.value).inc()
        if err.code is ErrorCode.DB_QUERY:
            _log.error("query %s failed: %s", name, exc, extra={"query": name})
        return err

    # --- health ---------------------------------------------------------------------------------
    async def health(self, *, timeout: float = 2.0) -> Health:
        """Round-trip a trivial query; never raises.

        Returns
        -------
        Health
            ``ok`` with the latency in milliseconds, or the error that made it fail.
        """
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.fetchval("health", _HEALTH), timeout)
        except (DatabaseError, TimeoutError) as exc:
            return Health(False, None, str(exc) or "timed out")
        return Health(True, round((time.perf_counter() - start) * 1000, 3))
