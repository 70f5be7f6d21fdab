"""Command usage: buffered in memory and written in batches (RoboDanny's ``jsonb_to_recordset``).

:class:`UsageRecorder` keeps rows in memory and every ``interval`` seconds (and on :meth:`close`)
writes all of them in **one** ``INSERT ... SELECT ... FROM jsonb_to_recordset($1::jsonb)``. A
failed flush keeps its rows for the next attempt; the buffer is bounded (``max_buffer``) and drops
the oldest rows beyond it, counting them in ``innkeeper_db_usage_dropped_total``. A clean
shutdown (:meth:`close`) flushes whatever is left, so nothing is lost.

Erasure and the buffers agree through the database: the batch insert skips every row of a user
erased *after* the row was recorded (``erased_users``, written by :func:`db.privacy.erase_user`).
So a user's uses still buffered in any cluster (or the CLI's erasure racing a cluster's flush) never
reach the table after their erasure, whichever cluster holds them and whether or not it is
reachable; uses after the erasure are recorded as usual.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from pypika import Order, Table
from pypika.functions import Count
from pypika.terms import Function

from innkeeper.errors import DatabaseError
from innkeeper.services import BackgroundTasks

from . import validate as v
from .sql import P1, P2, P3, P4, P5, P6, P7, P8, P9, AtTimezone, Cast, Exists, PgQuery, TableFunction, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = ("UsageRecorder", "UsageRow", "top_commands", "INSERT_BATCH", "INSERT_ONE", "USAGE_DROPPED",
           "USAGE_WRITTEN", "DailyUsage", "usage_by_day")

_log = logging.getLogger(__name__)

USAGE_DROPPED = Counter("innkeeper_db_usage_dropped_total", "Command-usage rows dropped because the buffer was full")
USAGE_WRITTEN = Counter("innkeeper_db_usage_written_total", "Command-usage rows written to the database")
USAGE_BUFFERED = Gauge("innkeeper_db_usage_buffered", "Command-usage rows waiting to be written")

_usage = Table("command_usage")
#: A row of command usage as the client writes it: (column, PostgreSQL type).
_ROW = (("used_at", "timestamptz"), ("guild_id", "bigint"), ("channel_id", "bigint"), ("user_id", "bigint"),
        ("command", "text"), ("cluster_id", "integer"), ("shard_id", "integer"), ("success", "boolean"),
        ("latency_ms", "real"))
_ROW_COLUMNS = tuple(_usage.field(c) for c, _ in _ROW)
_batch = TableFunction(Function("jsonb_to_recordset", Cast(P1, "jsonb")), "x", _ROW)
_erased = Table("erased_users")
#: A row recorded before its user was erased.
_ERASED_SINCE = Exists(
    PgQuery.from_(_erased).select(1)
    .where((_erased.user_id == _batch.field("user_id")) & (_batch.field("used_at") <= _erased.erased_at))
)
#: The whole buffer in one statement: $1 is a JSON array of row objects; rows of users erased since are skipped.
INSERT_BATCH = built(
    PgQuery.into(_usage).columns(*_ROW_COLUMNS).from_(_batch).select(*(_batch.field(c) for c, _ in _ROW))
    .where(_ERASED_SINCE.negate())
)
#: One row per statement; kept for the benchmark that compares against batching.
INSERT_ONE = built(PgQuery.into(_usage).columns(*_ROW_COLUMNS).insert(P1, P2, P3, P4, P5, P6, P7, P8, P9))
_USES = Count("*").as_("uses")
_TOP = built(
    PgQuery.from_(_usage).select(_usage.command, _USES)
    .where((_usage.guild_id == P1) & (_usage.used_at >= P2)).groupby(_usage.command)
    .orderby(_USES, order=Order.desc).orderby(_usage.command).limit(P3)
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    command: str
    uses: int

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> UsageRow:
        return cls(r["command"], r["uses"])


class UsageRecorder:
    """Buffers command-usage rows and writes them in batches.

    Parameters
    ----------
    db:
        The database.
    interval:
        Seconds between flushes.
    max_buffer:
        The most rows kept while the database is unreachable; older rows are dropped beyond it.
    max_batch:
        The most rows written by one statement.
    """

    __slots__ = ("db", "interval", "max_buffer", "max_batch", "dropped", "_buffer", "_tasks", "_lock", "_closed")

    def __init__(self, db: Database, *, interval: float = 5.0, max_buffer: int = 100_000,
                 max_batch: int = 10_000) -> None:
        self.db = db
        self.interval = interval
        self.max_buffer = max_buffer
        self.max_batch = max_batch
        self.dropped = 0
        self._buffer: deque[dict[str, Any]] = deque()
        self._tasks = BackgroundTasks("usage")
        self._lock = asyncio.Lock()
        self._closed = False

    def __len__(self) -> int:
        return len(self._buffer)

    def record(self, *, user_id: int, command: str, guild_id: int | None = None, channel_id: int | None = None,
               success: bool = True, latency_ms: float | None = None, cluster_id: int | None = None,
               shard_id: int | None = None, used_at: dt.datetime | None = None) -> None:
        """Buffer one use of ``command``; never blocks. Invalid values raise at once, not at flush time."""
        if self._closed:
            raise DatabaseError("the usage recorder is closed")
        row = {
            "used_at": (used_at or dt.datetime.now(dt.UTC)).isoformat(),
            "guild_id": v.opt_snowflake("guild id", guild_id),
            "channel_id": v.opt_snowflake("channel id", channel_id),
            "user_id": v.snowflake("user id", user_id),
            "command": v.text("command name", command, v.MAX_COMMAND_NAME),
            "cluster_id": cluster_id, "shard_id": shard_id, "success": bool(success),
            "latency_ms": None if latency_ms is None else float(latency_ms),
        }
        self._buffer.append(row)
        self._trim()

    def _trim(self) -> None:
        excess = len(self._buffer) - self.max_buffer
        for _ in range(max(excess, 0)):
            self._buffer.popleft()
        if excess > 0:
            self.dropped += excess
            USAGE_DROPPED.inc(excess)
        USAGE_BUFFERED.set(len(self._buffer))

    async def start(self) -> None:
        """Flush every ``interval`` seconds until :meth:`stop`."""
        if not len(self._tasks):
            self._tasks.every(self.interval, self._flush_shielded, name="flush", run_first=False,
                              on_error=self._flush_failed)

    async def _flush_shielded(self) -> None:
        # A flush cancelled after its INSERT committed would put the written rows back and write them
        # twice: stopping cancels the wait for the periodic flush, never the flush itself (``stop``
        # then waits for it through the lock and writes what is left).
        await asyncio.shield(self.flush())

    def _flush_failed(self, exc: Exception) -> None:
        if isinstance(exc, DatabaseError):
            _log.warning("command usage flush failed, %d rows kept for the next try: %s", len(self), exc)
        else:
            _log.error("command usage flush failed", exc_info=exc)

    async def flush(self, *, conn: Conn | None = None) -> int:
        """Write every buffered row, ``max_batch`` rows per statement; returns how many were written
        (rows of users erased after they were recorded are dropped, not written).

        Raises
        ------
        DatabaseError
            When a batch fails; its rows (and all later ones) stay buffered.
        """
        written = 0
        async with self._lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(self.max_batch, len(self._buffer)))]
                try:
                    status = await self.db.execute("command_usage.insert_batch", INSERT_BATCH, batch, conn=conn)
                except BaseException:
                    self._buffer.extendleft(reversed(batch))  # keep them, in order, for the next try
                    self._trim()
                    raise
                inserted = int(status.rsplit(" ", 1)[-1])  # without the rows of users erased since
                written += inserted
                USAGE_WRITTEN.inc(inserted)
                USAGE_BUFFERED.set(len(self._buffer))
        return written

    async def stop(self) -> None:
        """Stop the periodic flush and write what is left; a failed final write is logged with what it lost."""
        try:
            await self.close()
        except DatabaseError as exc:
            _log.warning("lost %d usage rows at shutdown: %s", len(self), exc)

    async def close(self) -> None:
        """Stop the periodic flush and write what is left (raises when that final write fails)."""
        self._closed = True
        await self._tasks.cancel()
        await self.flush()

    async def __aenter__(self) -> UsageRecorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def top_commands(db: Database, guild_id: int, *, since: dt.datetime, limit: int = 10,
                       conn: Conn | None = None) -> list[UsageRow]:
    """The guild's most used commands since ``since``."""
    rows = await db.fetch("command_usage.top", _TOP, v.snowflake("guild id", guild_id), since,
                          min(max(limit, 1), 100), conn=conn)
    return [UsageRow.from_record(r) for r in rows]


# Added for the /stats command (commands helper): uses per UTC day and command, optionally one command ($3).
_DAY = Cast(AtTimezone(_usage.used_at, "UTC"), "date").as_("day")
_BY_DAY = built(
    PgQuery.from_(_usage)
    .select(_DAY, _usage.command, _USES, Count("*").filter(_usage.success.negate()).as_("failures"))
    .where((_usage.guild_id == P1) & (_usage.used_at >= P2)
           & (Cast(P3, "text").isnull() | (_usage.command == P3)))
    .groupby(_DAY, _usage.command)
    .orderby(_DAY, order=Order.desc).orderby(_USES, order=Order.desc).orderby(_usage.command).limit(P4)
)


@dataclass(frozen=True, slots=True)
class DailyUsage:
    day: dt.date
    command: str
    uses: int
    failures: int


async def usage_by_day(db: Database, guild_id: int, *, since: dt.datetime, command: str | None = None,
                       limit: int = 5000, conn: Conn | None = None) -> list[DailyUsage]:
    """The guild's uses per UTC day and command since ``since`` (newest day first), optionally of one command."""
    rows = await db.fetch("command_usage.by_day", _BY_DAY, v.snowflake("guild id", guild_id), since,
                          None if command is None else v.text("command name", command, v.MAX_COMMAND_NAME),
                          min(max(limit, 1), 10_000), conn=conn)
    return [DailyUsage(r["day"], r["command"], r["uses"], r["failures"]) for r in rows]
