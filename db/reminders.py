"""Reminders, delivered exactly once across clusters.

A cluster *claims* due reminders (:func:`claim_due`): one ``UPDATE`` over a ``SELECT ... FOR UPDATE
SKIP LOCKED``, which stamps ``claimed_by`` and a lease (``claimed_until``). Two clusters claiming
at once never get the same row. After sending, the claimer marks the reminder delivered
(:func:`mark_delivered`, which only succeeds while it still holds the claim). When a cluster dies
holding a claim, the lease expires and another cluster claims the row again; ``attempts`` counts
the claims. The reminder text is encrypted at rest, bound to its row (the reminder's id, drawn from
the sequence before the insert, and its owner).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pypika import Table
from pypika.functions import Count, Min
from pypika.queries import AliasedQuery
from pypika.terms import Function

from innkeeper.errors import DatabaseError, ErrorCode

from . import validate as v
from .crypto import row_binding
from .sql import P1, P2, P3, P4, P5, P6, P7, Cast, NamedArg, Now, PgQuery, built

if TYPE_CHECKING:
    import asyncpg

    from .crypto import KeyRing
    from .pool import Conn, Database

__all__ = ("Reminder", "create_reminder", "get_reminder", "list_for_user", "cancel_reminder", "claim_due",
           "mark_delivered", "release_claim", "next_due", "BODY_CONTEXT", "MAX_PER_USER", "COLUMNS")

BODY_CONTEXT = "reminders.body"
MAX_PER_USER = 100
_MAX_AHEAD = dt.timedelta(days=3 * 366)


@dataclass(frozen=True, slots=True)
class Reminder:
    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    body: str
    created_at: dt.datetime
    due_at: dt.datetime
    claimed_by: str | None
    claimed_until: dt.datetime | None
    attempts: int
    delivered_at: dt.datetime | None

    @classmethod
    def from_record(cls, r: asyncpg.Record, keys: KeyRing) -> Reminder:
        body = keys.decrypt(r["body"], context=BODY_CONTEXT, row=row_binding(r["id"], r["user_id"]))
        return cls(r["id"], r["user_id"], r["guild_id"], r["channel_id"], body, r["created_at"], r["due_at"],
                   r["claimed_by"], r["claimed_until"], r["attempts"], r["delivered_at"])


_reminders = Table("reminders")
#: The columns a :class:`Reminder` is read from (also what a user's data export holds).
COLUMNS = tuple(_reminders.field(c) for c in (
    "id", "user_id", "guild_id", "channel_id", "body", "created_at", "due_at", "claimed_by", "claimed_until",
    "attempts", "delivered_at",
))
_PENDING = _reminders.delivered_at.isnull()
#: The next reminder id, drawn before the insert so that the text can be bound to its row.
_NEXT_ID = built(PgQuery.select(Function("nextval", Function("pg_get_serial_sequence", "reminders", "id"))))
# One statement: the cap on pending reminders is checked where the row is written.
_CREATE = built(
    PgQuery.into(_reminders)
    .columns(_reminders.user_id, _reminders.guild_id, _reminders.channel_id, _reminders.body, _reminders.due_at,
             _reminders.id)
    .select(Cast(P1, "bigint"), Cast(P2, "bigint"), Cast(P3, "bigint"), Cast(P4, "text"), Cast(P5, "timestamptz"),
            Cast(P7, "bigint"))
    .where(PgQuery.from_(_reminders).select(Count("*")).where((_reminders.user_id == P1) & _PENDING) < P6)
    .returning(*COLUMNS)
)
_GET = built(PgQuery.from_(_reminders).select(*COLUMNS).where(_reminders.id == P1))
_LIST_PENDING = built(
    PgQuery.from_(_reminders).select(*COLUMNS).where((_reminders.user_id == P1) & _PENDING)
    .orderby(_reminders.due_at).limit(P2)
)
_CANCEL = built(
    PgQuery.from_(_reminders).delete().where((_reminders.id == P1) & (_reminders.user_id == P2) & _PENDING)
)
# Due, unclaimed (or the claim expired) rows, locked; rows another claimer holds locked are skipped.
_due = (
    PgQuery.from_(_reminders).select(_reminders.id)
    .where(_PENDING & (_reminders.due_at <= Now())
           & (_reminders.claimed_until.isnull() | (_reminders.claimed_until < Now())))
    .orderby(_reminders.due_at).limit(P3).for_update(skip_locked=True)
)
_DUE = AliasedQuery("due")
_CLAIM = built(
    PgQuery.with_(_due, "due").update(_reminders)
    .set(_reminders.claimed_by, P1)
    .set(_reminders.claimed_until, Now() + Function("make_interval", NamedArg("secs", P2)))
    .set(_reminders.attempts, _reminders.attempts + 1)
    .from_(_DUE).where(_reminders.id == _DUE.id)
    .returning(*COLUMNS)
)
_HELD_BY = (_reminders.id == P1) & (_reminders.claimed_by == P2) & _PENDING
_DELIVERED = built(
    PgQuery.update(_reminders).set(_reminders.delivered_at, Now()).set(_reminders.claimed_until, None)
    .where(_HELD_BY)
)
_RELEASE = built(
    PgQuery.update(_reminders).set(_reminders.claimed_by, None).set(_reminders.claimed_until, None).where(_HELD_BY)
)
_NEXT_DUE = built(PgQuery.from_(_reminders).select(Min(_reminders.due_at)).where(_PENDING))


async def create_reminder(db: Database, keys: KeyRing, *, user_id: int, body: str, due_at: dt.datetime,
                          guild_id: int | None = None, channel_id: int | None = None,
                          conn: Conn | None = None) -> Reminder:
    """Store a reminder (text 1-1500 characters, ``due_at`` timezone-aware and within three years).

    Raises
    ------
    DatabaseError
        ``DB_BAD_VALUE`` for invalid text or time, ``DB_CONSTRAINT`` when the user already has
        :data:`MAX_PER_USER` pending reminders.
    """
    body = v.text("reminder", body, v.MAX_REMINDER)
    if not isinstance(due_at, dt.datetime) or due_at.tzinfo is None:
        raise v.bad("reminder time", "must be a timezone-aware datetime")
    if due_at - dt.datetime.now(dt.UTC) > _MAX_AHEAD:
        raise v.bad("reminder time", "must be within three years")
    user_id = v.snowflake("user id", user_id)
    reminder_id = int(await db.fetchval("reminders.next_id", _NEXT_ID, conn=conn))
    sealed = keys.encrypt(body, context=BODY_CONTEXT, row=row_binding(reminder_id, user_id))
    row = await db.fetchrow(
        "reminders.create", _CREATE, user_id, v.opt_snowflake("guild id", guild_id),
        v.opt_snowflake("channel id", channel_id), sealed, due_at, MAX_PER_USER, reminder_id,
        conn=conn, idempotent=False,
    )
    if row is None:
        raise DatabaseError(f"user {user_id} has {MAX_PER_USER} pending reminders", code=ErrorCode.DB_CONSTRAINT,
                            user_message=f"You can have at most {MAX_PER_USER} pending reminders.")
    return Reminder.from_record(row, keys)


async def get_reminder(db: Database, keys: KeyRing, reminder_id: int, *, conn: Conn | None = None) -> Reminder | None:
    row = await db.fetchrow("reminders.get", _GET, v.snowflake("reminder id", reminder_id), conn=conn)
    return Reminder.from_record(row, keys) if row else None


async def list_for_user(db: Database, keys: KeyRing, user_id: int, *, limit: int = 25,
                        conn: Conn | None = None) -> list[Reminder]:
    """The user's pending reminders, soonest first."""
    rows = await db.fetch("reminders.list_pending", _LIST_PENDING, v.snowflake("user id", user_id),
                          min(max(limit, 1), MAX_PER_USER), conn=conn)
    return [Reminder.from_record(r, keys) for r in rows]


async def cancel_reminder(db: Database, user_id: int, reminder_id: int, *, conn: Conn | None = None) -> bool:
    """Delete one of the user's pending reminders; True when it existed and was theirs."""
    status = await db.execute("reminders.cancel", _CANCEL, v.snowflake("reminder id", reminder_id),
                              v.snowflake("user id", user_id), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def claim_due(db: Database, keys: KeyRing, claimer: str, *, lease: float = 60.0, limit: int = 50,
                    conn: Conn | None = None) -> list[Reminder]:
    """Claim up to ``limit`` due reminders for ``lease`` seconds; nobody else gets them meanwhile.

    Parameters
    ----------
    claimer:
        Who claims, e.g. ``"cluster-3"`` (≤ 64 characters).
    lease:
        Seconds until an undelivered claim may be taken by someone else.
    """
    if not lease > 0:
        raise v.bad("lease", "must be positive")
    rows = await db.fetch("reminders.claim_due", _CLAIM, v.text("claimer", claimer, 64), float(lease),
                          min(max(limit, 1), 1000), conn=conn)
    return sorted((Reminder.from_record(r, keys) for r in rows), key=lambda r: (r.due_at, r.id))


async def mark_delivered(db: Database, reminder_id: int, claimer: str, *, conn: Conn | None = None) -> bool:
    """Mark the reminder delivered; False when ``claimer`` no longer holds it (do not count it as yours)."""
    status = await db.execute("reminders.mark_delivered", _DELIVERED, v.snowflake("reminder id", reminder_id),
                              v.text("claimer", claimer, 64), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def release_claim(db: Database, reminder_id: int, claimer: str, *, conn: Conn | None = None) -> bool:
    """Give a claim back (delivery failed) so the reminder can be claimed again at once."""
    status = await db.execute("reminders.release", _RELEASE, v.snowflake("reminder id", reminder_id),
                              v.text("claimer", claimer, 64), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def next_due(db: Database, *, conn: Conn | None = None) -> dt.datetime | None:
    """When the next undelivered reminder is due (to sleep until then), or ``None``."""
    value: dt.datetime | None = await db.fetchval("reminders.next_due", _NEXT_DUE, conn=conn)
    return value
