"""Feedback users send, with its status workflow.

``open`` → ``acknowledged`` → ``resolved`` | ``rejected`` (``open`` may also close directly). Who
moved it and when are kept (``acknowledged_by/at``, ``closed_by/at``). Each transition is one
conditional ``UPDATE``, so two moderators acting at once cannot both win.

The text (``body``) and the moderator's ``resolution`` are encrypted at rest with a
:class:`~db.crypto.KeyRing`, each bound to its row (the feedback's id and author: the id is drawn
from the sequence before the insert, and ``author_id`` never changes); functions here take the key
ring and return plaintext.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pypika import Order, Table
from pypika.terms import Function

from innkeeper.errors import DatabaseError, ErrorCode

from . import validate as v
from .crypto import row_binding
from .sql import P1, P2, P3, P4, P5, Now, PgQuery, Sql, built, placeholders

if TYPE_CHECKING:
    import asyncpg

    from .crypto import KeyRing
    from .pool import Conn, Database

__all__ = ("Feedback", "Status", "STATUSES", "submit_feedback", "get_feedback", "list_feedback", "acknowledge",
           "close", "BODY_CONTEXT", "RESOLUTION_CONTEXT", "COLUMNS")

Status = Literal["open", "acknowledged", "resolved", "rejected"]
STATUSES: tuple[Status, ...] = ("open", "acknowledged", "resolved", "rejected")
BODY_CONTEXT = "feedback.body"
RESOLUTION_CONTEXT = "feedback.resolution"
MAX_RESOLUTION = 1000


@dataclass(frozen=True, slots=True)
class Feedback:
    id: int
    guild_id: int | None
    channel_id: int | None
    author_id: int | None
    body: str
    status: Status
    created_at: dt.datetime
    acknowledged_by: int | None
    acknowledged_at: dt.datetime | None
    closed_by: int | None
    closed_at: dt.datetime | None
    resolution: str | None

    @classmethod
    def from_record(cls, r: asyncpg.Record, keys: KeyRing) -> Feedback:
        resolution = r["resolution"]
        row = row_binding(r["id"], r["author_id"])
        return cls(r["id"], r["guild_id"], r["channel_id"], r["author_id"],
                   keys.decrypt(r["body"], context=BODY_CONTEXT, row=row), r["status"], r["created_at"],
                   r["acknowledged_by"], r["acknowledged_at"], r["closed_by"], r["closed_at"],
                   None if resolution is None else keys.decrypt(resolution, context=RESOLUTION_CONTEXT, row=row))


_feedback = Table("feedback")
#: The columns a :class:`Feedback` is read from (also what a user's data export holds).
COLUMNS = tuple(_feedback.field(c) for c in (
    "id", "guild_id", "channel_id", "author_id", "body", "status", "created_at", "acknowledged_by", "acknowledged_at",
    "closed_by", "closed_at", "resolution",
))
#: The next feedback id, drawn before the insert so that the text can be bound to its row.
_NEXT_ID = built(PgQuery.select(Function("nextval", Function("pg_get_serial_sequence", "feedback", "id"))))
_SUBMIT = built(
    PgQuery.into(_feedback)
    .columns(_feedback.id, _feedback.guild_id, _feedback.channel_id, _feedback.author_id, _feedback.body)
    .insert(P1, P2, P3, P4, P5).returning(*COLUMNS)
)
_AUTHOR = built(PgQuery.from_(_feedback).select(_feedback.author_id).where(_feedback.id == P1))
_GET = built(PgQuery.from_(_feedback).select(*COLUMNS).where(_feedback.id == P1))
_ACK = built(
    PgQuery.update(_feedback).set(_feedback.status, "acknowledged").set(_feedback.acknowledged_by, P2)
    .set(_feedback.acknowledged_at, Now())
    .where((_feedback.id == P1) & (_feedback.status == "open")).returning(*COLUMNS)
)
_CLOSE = built(
    PgQuery.update(_feedback).set(_feedback.status, P2).set(_feedback.closed_by, P3).set(_feedback.closed_at, Now())
    .set(_feedback.resolution, P4)
    .where((_feedback.id == P1) & _feedback.status.isin(["open", "acknowledged"])).returning(*COLUMNS)
)
_STATUS = built(PgQuery.from_(_feedback).select(_feedback.status).where(_feedback.id == P1))


def _list_query(guild: bool, statuses: int, author: bool, before: bool) -> Sql:
    """The list query with these filters, their placeholders numbered in this order, the limit last."""
    n = placeholders()
    q = PgQuery.from_(_feedback).select(*COLUMNS)
    if guild:
        q = q.where(_feedback.guild_id == next(n))
    if statuses:
        q = q.where(_feedback.status.isin([next(n) for _ in range(statuses)]))
    if author:
        q = q.where(_feedback.author_id == next(n))
    if before:
        q = q.where(_feedback.id < next(n))
    return built(q.orderby(_feedback.id, order=Order.desc).limit(next(n)))


#: Every combination of filters, built once: (guild?, how many statuses, author?, before?) -> SQL.
_LIST = {key: _list_query(*key)
         for key in itertools.product((False, True), range(len(STATUSES) + 1), (False, True), (False, True))}


async def submit_feedback(db: Database, keys: KeyRing, *, author_id: int, body: str, guild_id: int | None = None,
                          channel_id: int | None = None, conn: Conn | None = None) -> Feedback:
    """Store new feedback (1-4000 characters) in status ``open``."""
    body = v.text("feedback", body, v.MAX_FEEDBACK)
    author_id = v.snowflake("author id", author_id)
    feedback_id = int(await db.fetchval("feedback.next_id", _NEXT_ID, conn=conn))
    sealed = keys.encrypt(body, context=BODY_CONTEXT, row=row_binding(feedback_id, author_id))
    row = await db.fetchrow(
        "feedback.submit", _SUBMIT, feedback_id, v.opt_snowflake("guild id", guild_id),
        v.opt_snowflake("channel id", channel_id), author_id, sealed, conn=conn, idempotent=False,
    )
    assert row is not None
    return Feedback.from_record(row, keys)


async def get_feedback(db: Database, keys: KeyRing, feedback_id: int, *, conn: Conn | None = None) -> Feedback | None:
    row = await db.fetchrow("feedback.get", _GET, v.snowflake("feedback id", feedback_id), conn=conn)
    return Feedback.from_record(row, keys) if row else None


def build_list_query(*, guild_id: int | None = None, statuses: tuple[Status, ...] | None = None,
                     author_id: int | None = None, before_id: int | None = None,
                     limit: int = 25) -> tuple[Sql, list[Any]]:
    """The SQL and arguments for :func:`list_feedback` (built at import time; every value a ``$n`` parameter)."""
    args: list[Any] = []
    if guild_id is not None:
        args.append(v.snowflake("guild id", guild_id))
    wanted = tuple(dict.fromkeys(statuses or ()))  # each status once: IN (...) means the same
    if any(s not in STATUSES for s in wanted):
        raise v.bad("feedback status", f"must be one of {', '.join(STATUSES)}")
    args.extend(wanted)
    if author_id is not None:
        args.append(v.snowflake("author id", author_id))
    if before_id is not None:
        args.append(v.snowflake("feedback id", before_id))
    if not 1 <= limit <= 100:
        raise v.bad("limit", "must be between 1 and 100")
    args.append(limit)
    return _LIST[guild_id is not None, len(wanted), author_id is not None, before_id is not None], args


async def list_feedback(db: Database, keys: KeyRing, *, guild_id: int | None = None,
                        statuses: tuple[Status, ...] | None = None, author_id: int | None = None,
                        before_id: int | None = None, limit: int = 25, conn: Conn | None = None) -> list[Feedback]:
    """Feedback newest first, filtered; page with ``before_id``."""
    sql, args = build_list_query(guild_id=guild_id, statuses=statuses, author_id=author_id, before_id=before_id,
                                 limit=limit)
    rows = await db.fetch("feedback.list", sql, *args, conn=conn)
    return [Feedback.from_record(r, keys) for r in rows]


async def _refused(db: Database, feedback_id: int, wanted: str, conn: Conn | None) -> DatabaseError:
    status = await db.fetchval("feedback.status", _STATUS, feedback_id, conn=conn)
    if status is None:
        return DatabaseError(f"feedback #{feedback_id} does not exist", code=ErrorCode.NOT_FOUND,
                             user_message=f"There is no feedback #{feedback_id}.")
    return DatabaseError(f"feedback #{feedback_id} is {status} and cannot become {wanted}",
                         code=ErrorCode.DB_CONSTRAINT,
                         user_message=f"Feedback #{feedback_id} is already {status}.")


async def acknowledge(db: Database, keys: KeyRing, feedback_id: int, *, by: int,
                      conn: Conn | None = None) -> Feedback:
    """Move ``open`` feedback to ``acknowledged``.

    Raises
    ------
    DatabaseError
        ``NOT_FOUND`` for an unknown id, ``DB_CONSTRAINT`` when it is not ``open`` any more.
    """
    feedback_id = v.snowflake("feedback id", feedback_id)
    row = await db.fetchrow("feedback.acknowledge", _ACK, feedback_id, v.snowflake("moderator id", by), conn=conn,
                            idempotent=False)
    if row is None:
        raise await _refused(db, feedback_id, "acknowledged", conn)
    return Feedback.from_record(row, keys)


async def close(db: Database, keys: KeyRing, feedback_id: int, status: Literal["resolved", "rejected"], *, by: int,
                resolution: str | None = None, conn: Conn | None = None) -> Feedback:
    """Resolve or reject ``open`` or ``acknowledged`` feedback, with an optional note (≤ 1000 characters)."""
    if status not in ("resolved", "rejected"):
        raise v.bad("feedback status", "must be resolved or rejected")
    feedback_id = v.snowflake("feedback id", feedback_id)
    note = None
    if resolution is not None:
        text = v.text("resolution", resolution, MAX_RESOLUTION)
        found = await db.fetchrow("feedback.author", _AUTHOR, feedback_id, conn=conn)
        if found is None:
            raise await _refused(db, feedback_id, status, conn)
        note = keys.encrypt(text, context=RESOLUTION_CONTEXT, row=row_binding(feedback_id, found["author_id"]))
    row = await db.fetchrow("feedback.close", _CLOSE, feedback_id, status, v.snowflake("moderator id", by), note,
                            conn=conn, idempotent=False)
    if row is None:
        raise await _refused(db, feedback_id, status, conn)
    return Feedback.from_record(row, keys)
