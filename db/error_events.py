"""Error events: what went wrong, where, for whom; kept for operators and cleared by retention.

Error events are diagnostics, so :func:`record_error` never refuses text: NUL characters and
invalid Unicode become U+FFFD and an over-long message is cut to 4000 characters. When that
happens the stored ``context`` says so (``"sanitized": true``), so nothing is silently altered.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pypika import Order, Table

from . import validate as v
from .sql import P1, P2, P3, P4, P5, P6, P7, P8, P9, PgQuery, Sql, built, placeholders

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = ("ErrorEvent", "record_error", "list_errors", "build_list_query")


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    id: int
    occurred_at: dt.datetime
    code: str
    message: str
    command: str | None
    guild_id: int | None
    channel_id: int | None
    user_id: int | None
    cluster_id: int | None
    shard_id: int | None
    context: dict[str, Any]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> ErrorEvent:
        return cls(r["id"], r["occurred_at"], r["code"], r["message"], r["command"], r["guild_id"], r["channel_id"],
                   r["user_id"], r["cluster_id"], r["shard_id"], r["context"])


_errors = Table("error_events")
_COLUMNS = tuple(_errors.field(c) for c in (
    "id", "occurred_at", "code", "message", "command", "guild_id", "channel_id", "user_id", "cluster_id", "shard_id",
    "context",
))
_INSERT = built(
    PgQuery.into(_errors)
    .columns(_errors.code, _errors.message, _errors.command, _errors.guild_id, _errors.channel_id, _errors.user_id,
             _errors.cluster_id, _errors.shard_id, _errors.context)
    .insert(P1, P2, P3, P4, P5, P6, P7, P8, P9).returning(*_COLUMNS)
)


def _list_query(code: bool, guild: bool, since: bool, before: bool) -> Sql:
    """The list query with these filters, their placeholders numbered in this order, the limit last."""
    n = placeholders()
    q = PgQuery.from_(_errors).select(*_COLUMNS)
    if code:
        q = q.where(_errors.code == next(n))
    if guild:
        q = q.where(_errors.guild_id == next(n))
    if since:
        q = q.where(_errors.occurred_at >= next(n))
    if before:
        q = q.where(_errors.id < next(n))
    return built(q.orderby(_errors.id, order=Order.desc).limit(next(n)))


#: Every combination of filters, built once: (code?, guild?, since?, before?) -> SQL.
_LIST = {key: _list_query(*key) for key in itertools.product((False, True), repeat=4)}


def _clean(value: str, max_len: int, changed: list[bool]) -> str:
    cleaned = v.sanitize(value, max_len)
    if cleaned != value:
        changed.append(True)
    return cleaned


def _clean_json(value: Any, changed: list[bool], depth: int = 0) -> Any:
    if depth > 16:
        changed.append(True)
        return None
    if isinstance(value, str):
        return _clean(value, 4000, changed)
    if isinstance(value, dict):
        return {_clean(str(k), 256, changed): _clean_json(x, changed, depth + 1) for k, x in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(x, changed, depth + 1) for x in value]
    if value is None or isinstance(value, bool | float) and value == value and abs(value) != float("inf"):
        return value
    if isinstance(value, int) and v.INT64_MIN <= value <= v.INT64_MAX and not isinstance(value, bool):
        return value
    changed.append(True)
    return repr(value)[:4000]


async def record_error(db: Database, *, code: str, message: str, command: str | None = None,
                       guild_id: int | None = None, channel_id: int | None = None, user_id: int | None = None,
                       cluster_id: int | None = None, shard_id: int | None = None,
                       context: dict[str, Any] | None = None, conn: Conn | None = None) -> ErrorEvent:
    """Store an error event; text is made storable rather than refused (see the module docstring)."""
    changed: list[bool] = []
    ctx = _clean_json(dict(context or {}), changed)
    row_args = (
        _clean(code, 16, changed) or "E9999", _clean(message, v.MAX_ERROR_MESSAGE, changed),
        None if command is None else _clean(command, v.MAX_COMMAND_NAME, changed),
        v.opt_snowflake("guild id", guild_id), v.opt_snowflake("channel id", channel_id),
        v.opt_snowflake("user id", user_id), cluster_id, shard_id,
    )
    if changed:
        ctx["sanitized"] = True
    row = await db.fetchrow("error_events.insert", _INSERT, *row_args, ctx, conn=conn, idempotent=False)
    assert row is not None
    return ErrorEvent.from_record(row)


def build_list_query(*, code: str | None = None, guild_id: int | None = None, since: dt.datetime | None = None,
                     before_id: int | None = None, limit: int = 50) -> tuple[Sql, list[Any]]:
    """The SQL and arguments for :func:`list_errors` (built at import time; every value a ``$n`` parameter)."""
    args: list[Any] = []
    if code is not None:
        args.append(v.text("error code", code, 16))
    if guild_id is not None:
        args.append(v.snowflake("guild id", guild_id))
    if since is not None:
        args.append(since)
    if before_id is not None:
        args.append(v.snowflake("error id", before_id))
    args.append(min(max(limit, 1), 500))
    return _LIST[code is not None, guild_id is not None, since is not None, before_id is not None], args


async def list_errors(db: Database, *, code: str | None = None, guild_id: int | None = None,
                      since: dt.datetime | None = None, before_id: int | None = None, limit: int = 50,
                      conn: Conn | None = None) -> list[ErrorEvent]:
    """Error events newest first, optionally filtered by code, guild and time."""
    sql, args = build_list_query(code=code, guild_id=guild_id, since=since, before_id=before_id, limit=limit)
    rows = await db.fetch("error_events.list", sql, *args, conn=conn)
    return [ErrorEvent.from_record(r) for r in rows]
