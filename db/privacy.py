"""Privacy primitives: export a user's data, erase a user, retention, and encryption-key rotation.

* :func:`export_user` returns every row about a user, from every table, as one JSON-ready dict
  (ids as strings, times in ISO 8601, encrypted text decrypted).
* :func:`erase_user` removes or anonymises the user everywhere in **one transaction**: their
  aliases, feedback, reminders, command usage and error events are deleted; where they appear as
  someone else's alias creator or as the moderator who handled feedback, the reference becomes
  NULL; in the audit log of admin actions they are replaced by a keyed pseudonym
  (:func:`db.audit.redact_user`), which keeps the chain verifiable and keeps who did what
  (accountability, GDPR Art. 17(3)). The erasure is recorded in ``erased_users`` for seven days so
  that usage rows still buffered in any cluster are dropped when they arrive (:mod:`db.usage`).
* :func:`run_retention` deletes data older than its configured age, per table, in small batches
  so it never holds long locks: command usage, error events, closed feedback, delivered and
  undeliverable reminders, and erasure records older than seven days. The audit log is not
  subject to retention (deleting from a hash chain would break it). The clusters run it
  (:mod:`db.maintenance`).
* :func:`rotate_keys` re-encrypts every encrypted value that is not under the current key, and
  :func:`upgrade_ciphertexts` binds values written before row binding to their rows (``db.crypto``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pypika import Criterion, Field, Table
from pypika.terms import Function

from innkeeper.errors import DatabaseError, ErrorCode

from . import aliases as al
from . import audit
from . import feedback as fb
from . import reminders as rm
from . import validate as v
from .crypto import LEGACY_VERSION, VERSION, row_binding
from .sql import P1, P2, P3, Now, PgQuery, Sql, built

if TYPE_CHECKING:
    from collections.abc import Collection

    import asyncpg

    from innkeeper.settings import Settings

    from .crypto import KeyRing
    from .pool import Conn, Database
    from .pseudonyms import Pseudonyms

__all__ = ("export_user", "erase_user", "erased_since", "RetentionPolicy", "run_retention", "rotate_keys",
           "upgrade_ciphertexts", "ENCRYPTED_COLUMNS")

_log = logging.getLogger(__name__)

_aliases = Table("aliases")
_feedback = Table("feedback")
_usage = Table("command_usage")
_reminders = Table("reminders")
_errors = Table("error_events")
_erased = Table("erased_users")
#: How long an erasure is remembered (for usage rows buffered before it); retention forgets it after.
ERASURE_MEMORY = dt.timedelta(days=7)


def _columns(table: Table, *names: str) -> tuple[Field, ...]:
    return tuple(table.field(n) for n in names)


# --- export ---------------------------------------------------------------------------------------
_EXPORT_ALIASES = built(
    PgQuery.from_(_aliases).select(*al.COLUMNS)
    .where(((_aliases.scope == "user") & (_aliases.scope_id == P1)) | (_aliases.created_by == P1))
    .orderby(_aliases.id)
)
_EXPORT_FEEDBACK = built(
    PgQuery.from_(_feedback).select(*fb.COLUMNS)
    .where((_feedback.author_id == P1) | (_feedback.acknowledged_by == P1) | (_feedback.closed_by == P1))
    .orderby(_feedback.id)
)
_EXPORT_USAGE = built(
    PgQuery.from_(_usage)
    .select(*_columns(_usage, "used_at", "guild_id", "channel_id", "command", "success", "latency_ms"))
    .where(_usage.user_id == P1).orderby(_usage.used_at).orderby(_usage.id)
)
_EXPORT_REMINDERS = built(
    PgQuery.from_(_reminders).select(*rm.COLUMNS)
    .where(_reminders.user_id == P1).orderby(_reminders.id)
)
_EXPORT_ERRORS = built(
    PgQuery.from_(_errors)
    .select(*_columns(_errors, "id", "occurred_at", "code", "message", "command", "guild_id", "channel_id"))
    .where(_errors.user_id == P1).orderby(_errors.id)
)

# --- erasure --------------------------------------------------------------------------------------


def _delete(table: Table, where: Criterion) -> Sql:
    return built(PgQuery.from_(table).delete().where(where))


def _forget(table: Table, column: str) -> Sql:
    """Where the user ($1) appears in ``column`` of someone else's row, the reference becomes NULL."""
    return built(PgQuery.update(table).set(table.field(column), None).where(table.field(column) == P1))


#: Remember the erasure ($1), for usage rows that were buffered before it and arrive after it.
_REMEMBER_ERASURE = built(
    PgQuery.into(_erased).columns(_erased.user_id).insert(P1)
    .on_conflict(_erased.user_id).do_update(_erased.erased_at, Now())
)
_ERASE = (
    ("aliases", _delete(_aliases, (_aliases.scope == "user") & (_aliases.scope_id == P1))),
    ("aliases_created", _forget(_aliases, "created_by")),
    ("feedback", _delete(_feedback, _feedback.author_id == P1)),
    ("feedback_ack", _forget(_feedback, "acknowledged_by")),
    ("feedback_closed", _forget(_feedback, "closed_by")),
    ("reminders", _delete(_reminders, _reminders.user_id == P1)),
    ("command_usage", _delete(_usage, _usage.user_id == P1)),
    ("error_events", _delete(_errors, _errors.user_id == P1)),
)

# --- retention ------------------------------------------------------------------------------------


def _expire(table: Table, old: Criterion) -> Sql:
    """Delete at most $2 rows that are ``old`` (compared with the cutoff $1), a batch per statement."""
    return _delete(table, table.id.isin(PgQuery.from_(table).select(table.id).where(old).limit(P2)))


_FORGET_ERASURES = built(PgQuery.from_(_erased).delete().where(_erased.erased_at < P1))
_RETENTION = {
    "command_usage": _expire(_usage, _usage.used_at < P1),
    "error_events": _expire(_errors, _errors.occurred_at < P1),
    "feedback": _expire(_feedback, (_feedback.closed_at < P1) & _feedback.status.isin(["resolved", "rejected"])),
    "reminders": _expire(_reminders, (_reminders.delivered_at < P1) | (_reminders.failed_at < P1)),
}

# --- rotation and the row-binding upgrade ---------------------------------------------------------
#: (table, column, encryption context, the owner column its values are bound to) of every encrypted column.
ENCRYPTED_COLUMNS = (
    ("feedback", "body", fb.BODY_CONTEXT, "author_id"),
    ("feedback", "resolution", fb.RESOLUTION_CONTEXT, "author_id"),
    ("reminders", "body", rm.BODY_CONTEXT, "user_id"),
)
_TABLES = {"feedback": _feedback, "reminders": _reminders}


def _pending(table: Table, column: str, owner: str, *, legacy_only: bool) -> Sql:
    """Rows after id $2 whose value needs rewriting, $3 at a time, with the id and owner they are bound to.

    ``legacy_only``: values that start with $1 (``v1:``, bound to the column only). Otherwise: values
    that do not start with $1 (``v2:<current key>:``).
    """
    value = table.field(column)
    prefixed: Criterion = Function("starts_with", value, P1)
    wanted = value.isnotnull() & (prefixed if legacy_only else prefixed.negate())
    return built(
        PgQuery.from_(table).select(table.id, table.field(owner).as_("owner"), value.as_("value"))
        .where((table.id > P2) & wanted).orderby(table.id).limit(P3)
    )


def _rewrite(table: Table, column: str) -> Sql:
    """Value $3 replaces value $2 of row $1, unless the row changed meanwhile."""
    value = table.field(column)
    return built(PgQuery.update(table).set(value, P3).where((table.id == P1) & (value == P2)))


_STALE = {(t, c): _pending(_TABLES[t], c, o, legacy_only=False) for t, c, _, o in ENCRYPTED_COLUMNS}
_LEGACY = {(t, c): _pending(_TABLES[t], c, o, legacy_only=True) for t, c, _, o in ENCRYPTED_COLUMNS}
_REWRITE = {(t, c): _rewrite(_TABLES[t], c) for t, c, _, _ in ENCRYPTED_COLUMNS}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def _row(record: asyncpg.Record, *, ids: tuple[str, ...] = (), decrypt: dict[str, str] | None = None,
         keys: KeyRing | None = None, owner: str = "") -> dict[str, Any]:
    """A row as JSON-ready data, encrypted columns decrypted.

    A text that waits to be bound to its row (written before row binding, until the clusters'
    maintenance upgrades it) is exported as ``null`` with ``<column>_unreadable`` saying so: the rest
    of the export must not wait for it. A text whose key is not in the ring raises (naming the key: put
    it back), and one that fails authentication (altered, or moved from another row) raises: that is
    tampering.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if value is not None and decrypt and key in decrypt and keys is not None:
            try:
                value = keys.decrypt(value, context=decrypt[key], row=row_binding(record["id"], record[owner]))
            except DatabaseError as exc:
                if exc.code is not ErrorCode.DB_LEGACY_CIPHERTEXT:
                    raise
                value = None
                out[f"{key}_unreadable"] = exc.message
        if key in ids or key == "id" or key.endswith(("_id", "_by")):
            out[key] = None if value is None else str(value)
        else:
            out[key] = _jsonable(value)
    return out


async def export_user(db: Database, keys: KeyRing, user_id: int, *, conn: Conn | None = None) -> dict[str, Any]:
    """Every row about ``user_id`` as a JSON-ready dict (one section per table).

    Discord ids are strings, as in Discord's own JSON; encrypted text is decrypted.
    """
    uid = v.snowflake("user id", user_id)
    if conn is None:
        async with db.transaction(isolation="repeatable_read") as tx:
            return await export_user(db, keys, uid, conn=tx)
    aliases = await db.fetch("privacy.export_aliases", _EXPORT_ALIASES, uid, conn=conn)
    feedback = await db.fetch("privacy.export_feedback", _EXPORT_FEEDBACK, uid, conn=conn)
    usage = await db.fetch("privacy.export_usage", _EXPORT_USAGE, uid, conn=conn)
    reminders = await db.fetch("privacy.export_reminders", _EXPORT_REMINDERS, uid, conn=conn)
    errors = await db.fetch("privacy.export_errors", _EXPORT_ERRORS, uid, conn=conn)
    entries = await audit.for_user(db, uid, conn=conn)
    fb_decrypt = {"body": fb.BODY_CONTEXT, "resolution": fb.RESOLUTION_CONTEXT}
    return {
        "user_id": str(uid),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "aliases": [_row(r) for r in aliases],
        "feedback": [_row(r, decrypt=fb_decrypt, keys=keys, owner="author_id") for r in feedback],
        "command_usage": [_row(r) for r in usage],
        "reminders": [_row(r, decrypt={"body": rm.BODY_CONTEXT}, keys=keys, owner="user_id") for r in reminders],
        "error_events": [_row(r) for r in errors],
        "audit_log": [
            {"id": str(e.id), "guild_id": None if e.guild_id is None else str(e.guild_id),
             "actor_id": None if e.actor_id is None else str(e.actor_id), "action": e.action,
             "target_id": None if e.target_id is None else str(e.target_id), "target": e.target,
             "details": e.details, "created_at": e.created_at.isoformat(), "actor_pseudonym": e.actor_pseudonym,
             "target_pseudonym": e.target_pseudonym}
            for e in entries
        ],
    }


_ERASED_SINCE = built(
    PgQuery.from_(_erased).select(_erased.user_id, _erased.erased_at)
    .where((_erased.user_id == Function("ANY", P1)) & (_erased.erased_at >= P2))
)


async def erased_since(db: Database, user_ids: Collection[int], since: dt.datetime, *,
                       conn: Conn | None = None) -> dict[int, dt.datetime]:
    """Those of ``user_ids`` erased at or after ``since``, with when (records are kept :data:`ERASURE_MEMORY`).

    What a process still holds about a user from before an erasure (buffered usage, counted refusals)
    must not be written after it: ask this before writing it.
    """
    if not user_ids:
        return {}
    rows = await db.fetch("erased_users.since", _ERASED_SINCE, [v.snowflake("user id", u) for u in user_ids],
                          since, conn=conn)
    return {int(r["user_id"]): r["erased_at"] for r in rows}


async def erase_user(db: Database, user_id: int, *, pseudonyms: Pseudonyms,
                     conn: Conn | None = None) -> dict[str, int]:
    """Erase ``user_id`` from every table in one transaction; returns the rows touched per table.

    Parameters
    ----------
    pseudonyms:
        What replaces the user in the audit log (:class:`db.pseudonyms.Pseudonyms`).
    conn:
        Run inside your own transaction.
    """
    uid = v.snowflake("user id", user_id)
    if conn is None:
        async with db.transaction() as tx:
            return await erase_user(db, uid, pseudonyms=pseudonyms, conn=tx)
    await db.execute("privacy.remember_erasure", _REMEMBER_ERASURE, uid, conn=conn)
    counts: dict[str, int] = {}
    for name, sql in _ERASE:
        status = await db.execute(f"privacy.erase_{name}", sql, uid, conn=conn)
        counts[name] = int(status.rsplit(" ", 1)[-1])
    counts["audit_log"] = await audit.redact_user(db, uid, pseudonyms, conn=conn)
    _log.info("erased user data", extra={"rows": counts})
    return counts


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Maximum age in days per table; 0 keeps that table's rows forever."""

    usage_days: int = 90
    errors_days: int = 30
    feedback_days: int = 180
    reminders_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """``INNKEEPER_RETENTION_{USAGE,ERRORS,FEEDBACK,REMINDERS}_DAYS``."""
        return cls(settings.retention_usage_days, settings.retention_errors_days, settings.retention_feedback_days,
                   settings.retention_reminders_days)

    def ages(self) -> dict[str, int]:
        return {"command_usage": self.usage_days, "error_events": self.errors_days, "feedback": self.feedback_days,
                "reminders": self.reminders_days}


async def run_retention(db: Database, policy: RetentionPolicy, *, now: dt.datetime | None = None,
                        batch: int = 5000, conn: Conn | None = None) -> dict[str, int]:
    """Delete rows past their table's age, ``batch`` rows per statement; returns the deletions per table.

    Erasure records older than :data:`ERASURE_MEMORY` go too (``erased_users``).
    """
    now = now or dt.datetime.now(dt.UTC)
    deleted: dict[str, int] = {}
    for table, days in policy.ages().items():
        deleted[table] = 0
        if days <= 0:
            continue
        cutoff = now - dt.timedelta(days=days)
        while True:
            status = await db.execute(f"retention.{table}", _RETENTION[table], cutoff, batch, conn=conn,
                                      idempotent=True)
            n = int(status.rsplit(" ", 1)[-1])
            deleted[table] += n
            if n < batch:
                break
    status = await db.execute("retention.erased_users", _FORGET_ERASURES, now - ERASURE_MEMORY, conn=conn,
                              idempotent=True)
    deleted["erased_users"] = int(status.rsplit(" ", 1)[-1])
    _log.info("retention deleted old rows", extra={"rows": deleted})
    return deleted


async def _reencrypt(db: Database, keys: KeyRing, queries: dict[tuple[str, str], Sql], prefix: str, *,
                     same_key: bool, batch: int, conn: Conn | None) -> dict[str, int]:
    """Rewrite every value the ``queries`` select, bound to its row; returns the count per ``table.column``."""
    done: dict[str, int] = {}
    for table, column, context, _ in ENCRYPTED_COLUMNS:
        key = (table, column)
        count, last_id = 0, 0
        while True:
            rows = await db.fetch(f"reencrypt.select_{table}_{column}", queries[key], prefix, last_id, batch,
                                  conn=conn)
            for r in rows:
                old, row = r["value"], row_binding(r["id"], r["owner"])
                plain = keys.decrypt(old, context=context, row=row, legacy=True)
                fresh = keys.encrypt(plain, context=context, row=row,
                                     key_id=keys.key_id_of(old) if same_key else None)
                status = await db.execute(f"reencrypt.update_{table}_{column}", _REWRITE[key], r["id"], old, fresh,
                                          conn=conn, idempotent=True)
                count += int(status.endswith(" 1"))
                last_id = r["id"]
            if len(rows) < batch:
                break
        done[f"{table}.{column}"] = count
    return done


async def rotate_keys(db: Database, keys: KeyRing, *, batch: int = 500, conn: Conn | None = None) -> dict[str, int]:
    """Re-encrypt every value of :data:`ENCRYPTED_COLUMNS` that is not bound to its row under the current key.

    Each value is decrypted with the key it names (all old keys must still be configured) and
    written back under the current key, bound to its row, only if it did not change meanwhile.
    Values from before row binding (``v1:``) are upgraded on the way. Returns the number of values
    re-encrypted per ``table.column``.
    """
    done = await _reencrypt(db, keys, _STALE, f"{VERSION}:{keys.current}:", same_key=False, batch=batch, conn=conn)
    _log.info("re-encrypted values under key %s", keys.current, extra={"rows": done})
    return done


async def upgrade_ciphertexts(db: Database, keys: KeyRing, *, batch: int = 500,
                              conn: Conn | None = None) -> dict[str, int]:
    """Bind every value written before row binding (``v1:``) to the row it is in, under the key it names.

    Safe while the bot runs and safe to repeat: each value is rewritten only if it did not change
    meanwhile (a concurrent write wins, and is already bound), under the key it already had (so no
    cluster that lacks a newer key loses it), in batches. Until a value is upgraded, ordinary reads
    refuse it (``DB_LEGACY_CIPHERTEXT``) rather than decrypt it without checking its row.
    """
    done = await _reencrypt(db, keys, _LEGACY, f"{LEGACY_VERSION}:", same_key=True, batch=batch, conn=conn)
    if any(done.values()):
        _log.info("bound encrypted values to their rows", extra={"rows": done})
    return done
