"""Reminders, delivered exactly once across clusters.

A cluster *claims* due reminders (:func:`claim_due`): one ``UPDATE`` over a ``SELECT ... FOR UPDATE
SKIP LOCKED``, which stamps ``claimed_by`` and a lease (``claimed_until``). Two clusters claiming
at once never get the same row. After sending, the claimer marks the reminder delivered
(:func:`mark_delivered`, which only succeeds while it still holds the claim). When a cluster dies
holding a claim, the lease expires and another cluster claims the row again; ``attempts`` counts
the claims. The reminder text is encrypted at rest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from innkeeper.errors import DatabaseError, ErrorCode

from . import validate as v

if TYPE_CHECKING:
    import asyncpg

    from .crypto import KeyRing
    from .pool import Conn, Database

__all__ = ("Reminder", "create_reminder", "get_reminder", "list_for_user", "cancel_reminder", "claim_due",
           "mark_delivered", "release_claim", "next_due", "BODY_CONTEXT", "MAX_PER_USER")

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
        return cls(r["id"], r["user_id"], r["guild_id"], r["channel_id"], keys.decrypt(r["body"], context=BODY_CONTEXT),
                   r["created_at"], r["due_at"], r["claimed_by"], r["claimed_until"], r["attempts"],
                   r["delivered_at"])


_COLUMNS = ("id, user_id, guild_id, channel_id, body, created_at, due_at, claimed_by, claimed_until, attempts, "
            "delivered_at")
_CREATE = """INSERT INTO reminders (user_id, guild_id, channel_id, body, due_at)
SELECT $1::bigint, $2::bigint, $3::bigint, $4::text, $5::timestamptz
WHERE (SELECT count(*) FROM reminders WHERE user_id = $1 AND delivered_at IS NULL) < $6
RETURNING id, user_id, guild_id, channel_id, body, created_at, due_at, claimed_by, claimed_until, attempts,
    delivered_at"""
_GET = """SELECT id, user_id, guild_id, channel_id, body, created_at, due_at, claimed_by, claimed_until, attempts,
    delivered_at FROM reminders WHERE id = $1"""
_LIST_PENDING = """SELECT id, user_id, guild_id, channel_id, body, created_at, due_at, claimed_by, claimed_until,
    attempts, delivered_at FROM reminders WHERE user_id = $1 AND delivered_at IS NULL
ORDER BY due_at LIMIT $2"""
_CANCEL = "DELETE FROM reminders WHERE id = $1 AND user_id = $2 AND delivered_at IS NULL"
_CLAIM = """WITH due AS (
    SELECT id FROM reminders
    WHERE delivered_at IS NULL AND due_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY due_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE reminders AS r
SET claimed_by = $1, claimed_until = now() + make_interval(secs => $2), attempts = r.attempts + 1
FROM due WHERE r.id = due.id
RETURNING r.id, r.user_id, r.guild_id, r.channel_id, r.body, r.created_at, r.due_at, r.claimed_by, r.claimed_until,
    r.attempts, r.delivered_at"""
_DELIVERED = """UPDATE reminders SET delivered_at = now(), claimed_until = NULL
WHERE id = $1 AND claimed_by = $2 AND delivered_at IS NULL"""
_RELEASE = """UPDATE reminders SET claimed_by = NULL, claimed_until = NULL
WHERE id = $1 AND claimed_by = $2 AND delivered_at IS NULL"""
_NEXT_DUE = "SELECT min(due_at) FROM reminders WHERE delivered_at IS NULL"


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
    row = await db.fetchrow(
        "reminders.create", _CREATE, v.snowflake("user id", user_id), v.opt_snowflake("guild id", guild_id),
        v.opt_snowflake("channel id", channel_id), keys.encrypt(body, context=BODY_CONTEXT), due_at, MAX_PER_USER,
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
