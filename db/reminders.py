"""Reminders, delivered exactly once across clusters, or marked undeliverable.

A cluster *claims* due reminders (:func:`claim_due`): one ``UPDATE`` over a ``SELECT ... FOR UPDATE
SKIP LOCKED``, which stamps ``claimed_by`` and a lease (``claimed_until``). Two clusters claiming
at once never get the same row. After sending, the claimer marks the reminder delivered
(:func:`mark_delivered`, which only succeeds while it still holds the claim). When a cluster dies
holding a claim, the lease expires and another cluster claims the row again; ``attempts`` counts
the claims. The reminder text is encrypted at rest, bound to its row (the reminder's id, drawn from
the sequence before the insert, and its owner).

A reminder that failed for a passing reason (a 5xx, a timeout, a 429) is released with a time
before which it is not claimed again (:func:`release_claim`, ``next_attempt_at``). One that cannot
be delivered at all is *undeliverable* (:func:`mark_failed`): ``failed_at`` and a reason
(:data:`FAILURES`) are stored, it is never claimed again, and its owner is told once, the next time
they use a reminder command (:func:`take_failures`). A reminder whose text cannot be decrypted
(its key left the key ring, or the value is corrupt) is marked undeliverable by :func:`claim_due`
itself, so it cannot jam delivery; one whose text predates row binding is put back untried until
the clusters' maintenance has bound it to its row (``db.privacy.upgrade_ciphertexts``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pypika import Table
from pypika.functions import Count, Min
from pypika.queries import AliasedQuery
from pypika.terms import Function

from innkeeper.errors import ConfigError, DatabaseError, ErrorCode

from . import validate as v
from .crypto import row_binding
from .sql import P1, P2, P3, P4, P5, P6, P7, Cast, NamedArg, Now, PgQuery, built

if TYPE_CHECKING:
    import asyncpg

    from .crypto import KeyRing
    from .pool import Conn, Database

__all__ = ("Reminder", "Failure", "Undelivered", "create_reminder", "get_reminder", "list_for_user",
           "cancel_reminder", "claim_due", "extend_claim", "mark_delivered", "mark_failed", "release_claim",
           "take_failures", "next_due", "BODY_CONTEXT", "MAX_PER_USER", "COLUMNS", "FAILURES")

_log = logging.getLogger(__name__)

BODY_CONTEXT = "reminders.body"
MAX_PER_USER = 100
_MAX_AHEAD = dt.timedelta(days=3 * 366)

#: Why a reminder is undeliverable: its channel refused the bot (403, or the bot may not view/send
#: there) and so did the owner's DMs; its channel is gone (404) and the DMs refused; it was set in
#: DMs and the DMs refused; its text cannot be decrypted; passing failures went on too long.
Failure = Literal["forbidden", "gone", "dm_closed", "unreadable", "gave_up"]
FAILURES: tuple[Failure, ...] = ("forbidden", "gone", "dm_closed", "unreadable", "gave_up")


@dataclass(frozen=True, slots=True)
class Reminder:
    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    #: The decrypted text; ``None`` when it cannot be decrypted (only :func:`list_for_user` returns such).
    body: str | None
    created_at: dt.datetime
    due_at: dt.datetime
    claimed_by: str | None
    claimed_until: dt.datetime | None
    attempts: int
    delivered_at: dt.datetime | None
    next_attempt_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    failure: Failure | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record, keys: KeyRing) -> Reminder:
        """The reminder of a row; raises what :meth:`KeyRing.decrypt` raises for an unreadable text."""
        return cls._of(r, keys.decrypt(r["body"], context=BODY_CONTEXT, row=row_binding(r["id"], r["user_id"])))

    @classmethod
    def _of(cls, r: asyncpg.Record, body: str | None) -> Reminder:
        return cls(r["id"], r["user_id"], r["guild_id"], r["channel_id"], body, r["created_at"], r["due_at"],
                   r["claimed_by"], r["claimed_until"], r["attempts"], r["delivered_at"], r["next_attempt_at"],
                   r["failed_at"], r["failure"])


@dataclass(frozen=True, slots=True)
class Undelivered:
    """An undeliverable reminder its owner has not been told about yet (no text: it may be unreadable)."""

    id: int
    guild_id: int | None
    channel_id: int | None
    due_at: dt.datetime
    failure: Failure


#: Seconds a reminder whose text predates row binding waits before it is claimed again.
_LEGACY_RETRY_S = 60.0
#: What decrypting a stored text raises when it cannot be read: its key left the ring (ConfigError),
#: the value is corrupt (DatabaseError), or it is not UTF-8 (ValueError).
_UNREADABLE = (ConfigError, DatabaseError, ValueError)


def _decrypt(keys: KeyRing, r: asyncpg.Record) -> str | None:
    """The row's text, or None when it cannot be decrypted."""
    try:
        return keys.decrypt(r["body"], context=BODY_CONTEXT, row=row_binding(r["id"], r["user_id"]))
    except _UNREADABLE:
        return None


_reminders = Table("reminders")
#: The columns a :class:`Reminder` is read from (also what a user's data export holds).
COLUMNS = tuple(_reminders.field(c) for c in (
    "id", "user_id", "guild_id", "channel_id", "body", "created_at", "due_at", "claimed_by", "claimed_until",
    "attempts", "delivered_at", "next_attempt_at", "failed_at", "failure", "failure_notified_at",
))
_PENDING = _reminders.delivered_at.isnull() & _reminders.failed_at.isnull()
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
# Due, unclaimed (or the claim expired) rows whose retry time has come, locked; rows another claimer
# holds locked are skipped.
_due = (
    PgQuery.from_(_reminders).select(_reminders.id)
    .where(_PENDING & (_reminders.due_at <= Now())
           & (_reminders.next_attempt_at.isnull() | (_reminders.next_attempt_at <= Now()))
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
# Our claim, lengthened: only while it is still ours (nobody claimed the reminder after it ran out).
_EXTEND = built(
    PgQuery.update(_reminders)
    .set(_reminders.claimed_until, Now() + Function("make_interval", NamedArg("secs", P3)))
    .where(_HELD_BY)
)
_DELIVERED = built(
    PgQuery.update(_reminders).set(_reminders.delivered_at, Now()).set(_reminders.claimed_until, None)
    .where(_HELD_BY)
)
_FAILED = built(
    PgQuery.update(_reminders).set(_reminders.failed_at, Now()).set(_reminders.failure, P3)
    .set(_reminders.claimed_until, None).where(_HELD_BY)
)
_RETRY_AT = Now() + Function("make_interval", NamedArg("secs", P3))
# Released after an attempt that failed: the attempt counts.
_RELEASE = built(
    PgQuery.update(_reminders).set(_reminders.claimed_by, None).set(_reminders.claimed_until, None)
    .set(_reminders.next_attempt_at, _RETRY_AT).where(_HELD_BY)
)
# Released without an attempt (the process had to hold back): the claim does not count as one.
_RELEASE_UNTRIED = built(
    PgQuery.update(_reminders).set(_reminders.claimed_by, None).set(_reminders.claimed_until, None)
    .set(_reminders.next_attempt_at, _RETRY_AT).set(_reminders.attempts, _reminders.attempts - 1).where(_HELD_BY)
)
_UNSEEN = _reminders.failed_at.notnull() & _reminders.failure_notified_at.isnull()
_TAKE_FAILURES = built(
    PgQuery.update(_reminders).set(_reminders.failure_notified_at, Now())
    .where(_reminders.id.isin(
        PgQuery.from_(_reminders).select(_reminders.id).where((_reminders.user_id == P1) & _UNSEEN)
        .orderby(_reminders.due_at).limit(P2)
    ) & _UNSEEN)
    .returning(_reminders.id, _reminders.guild_id, _reminders.channel_id, _reminders.due_at, _reminders.failure)
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
    """One reminder (its ``body`` is None when it cannot be decrypted), or None."""
    row = await db.fetchrow("reminders.get", _GET, v.snowflake("reminder id", reminder_id), conn=conn)
    return Reminder._of(row, _decrypt(keys, row)) if row else None


async def list_for_user(db: Database, keys: KeyRing, user_id: int, *, limit: int = 25,
                        conn: Conn | None = None) -> list[Reminder]:
    """The user's pending reminders, soonest first (``body`` None for a text that cannot be decrypted)."""
    rows = await db.fetch("reminders.list_pending", _LIST_PENDING, v.snowflake("user id", user_id),
                          min(max(limit, 1), MAX_PER_USER), conn=conn)
    return [Reminder._of(r, _decrypt(keys, r)) for r in rows]


async def cancel_reminder(db: Database, user_id: int, reminder_id: int, *, conn: Conn | None = None) -> bool:
    """Delete one of the user's pending reminders; True when it existed and was theirs."""
    status = await db.execute("reminders.cancel", _CANCEL, v.snowflake("reminder id", reminder_id),
                              v.snowflake("user id", user_id), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def claim_due(db: Database, keys: KeyRing, claimer: str, *, lease: float = 60.0, limit: int = 50,
                    conn: Conn | None = None) -> list[Reminder]:
    """Claim up to ``limit`` due reminders for ``lease`` seconds; nobody else gets them meanwhile.

    A claimed reminder whose text cannot be decrypted is marked undeliverable (``unreadable``) at
    once and logged with its id (never its text); it is not returned.

    Parameters
    ----------
    claimer:
        Who claims, e.g. ``"cluster-3"`` (≤ 64 characters).
    lease:
        Seconds until an undelivered claim may be taken by someone else.
    """
    if not lease > 0:
        raise v.bad("lease", "must be positive")
    claimer = v.text("claimer", claimer, 64)
    rows = await db.fetch("reminders.claim_due", _CLAIM, claimer, float(lease), min(max(limit, 1), 1000),
                          conn=conn)
    claimed: list[Reminder] = []
    for r in rows:
        try:
            claimed.append(Reminder.from_record(r, keys))
        except DatabaseError as exc:
            if exc.code is not ErrorCode.DB_LEGACY_CIPHERTEXT:
                _log.warning("reminder %s cannot be decrypted (%s); marking it undeliverable", r["id"], exc)
                await mark_failed(db, r["id"], claimer, "unreadable", conn=conn)
                continue
            # written before row binding: readable once maintenance has bound it to its row
            _log.info("reminder %s waits for its text to be bound to its row", r["id"])
            await release_claim(db, r["id"], claimer, retry_in=_LEGACY_RETRY_S, attempted=False, conn=conn)
        except _UNREADABLE as exc:
            why = str(exc) if isinstance(exc, ConfigError | DatabaseError) else "the text is not UTF-8"
            _log.warning("reminder %s cannot be decrypted (%s); marking it undeliverable", r["id"], why)
            await mark_failed(db, r["id"], claimer, "unreadable", conn=conn)
    return sorted(claimed, key=lambda r: (r.due_at, r.id))


async def extend_claim(db: Database, reminder_id: int, claimer: str, *, lease: float = 60.0,
                       conn: Conn | None = None) -> bool:
    """Hold the claim ``lease`` more seconds from now; False when ``claimer`` no longer holds it.

    A claim that ran out is extended as long as nobody claimed the reminder since: it is still
    ``claimer``'s. ``False`` means another claimer took it (or it was delivered, failed or
    cancelled): do not send it.
    """
    if not lease > 0:
        raise v.bad("lease", "must be positive")
    status = await db.execute("reminders.extend_claim", _EXTEND, v.snowflake("reminder id", reminder_id),
                              v.text("claimer", claimer, 64), float(lease), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def mark_delivered(db: Database, reminder_id: int, claimer: str, *, conn: Conn | None = None) -> bool:
    """Mark the reminder delivered; False when ``claimer`` no longer holds it (do not count it as yours)."""
    status = await db.execute("reminders.mark_delivered", _DELIVERED, v.snowflake("reminder id", reminder_id),
                              v.text("claimer", claimer, 64), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def mark_failed(db: Database, reminder_id: int, claimer: str, failure: Failure, *,
                      conn: Conn | None = None) -> bool:
    """Mark the reminder undeliverable for ``failure`` (final: it is never claimed again).

    False when ``claimer`` no longer holds it.
    """
    if failure not in FAILURES:
        raise v.bad("failure", f"must be one of {', '.join(FAILURES)}")
    status = await db.execute("reminders.mark_failed", _FAILED, v.snowflake("reminder id", reminder_id),
                              v.text("claimer", claimer, 64), failure, conn=conn, idempotent=True)
    return status.endswith(" 1")


async def release_claim(db: Database, reminder_id: int, claimer: str, *, retry_in: float = 0.0,
                        attempted: bool = True, conn: Conn | None = None) -> bool:
    """Give a claim back so the reminder is claimed again once ``retry_in`` seconds have passed.

    Parameters
    ----------
    retry_in:
        Seconds before any cluster may claim it again (the backoff after a passing failure).
    attempted:
        False when nothing was sent (the process held back, e.g. its invalid-request guard was
        refusing requests): the claim then does not count as an attempt.
    """
    if not retry_in >= 0:
        raise v.bad("retry delay", "must not be negative")
    status = await db.execute("reminders.release" if attempted else "reminders.release_untried",
                              _RELEASE if attempted else _RELEASE_UNTRIED, v.snowflake("reminder id", reminder_id),
                              v.text("claimer", claimer, 64), float(retry_in), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def take_failures(db: Database, user_id: int, *, limit: int = MAX_PER_USER,
                        conn: Conn | None = None) -> list[Undelivered]:
    """The user's undeliverable reminders they were not told about yet, soonest due first; each is
    marked told, so it is returned once."""
    rows = await db.fetch("reminders.take_failures", _TAKE_FAILURES, v.snowflake("user id", user_id),
                          min(max(limit, 1), 1000), conn=conn)
    return sorted((Undelivered(r["id"], r["guild_id"], r["channel_id"], r["due_at"], r["failure"]) for r in rows),
                  key=lambda u: (u.due_at, u.id))


async def next_due(db: Database, *, conn: Conn | None = None) -> dt.datetime | None:
    """When the next pending reminder is due (to sleep until then), or ``None``."""
    value: dt.datetime | None = await db.fetchval("reminders.next_due", _NEXT_DUE, conn=conn)
    return value
