"""Privacy primitives: export a user's data, erase a user, retention, and encryption-key rotation.

* :func:`export_user` returns every row about a user, from every table, as one JSON-ready dict
  (ids as strings, times in ISO 8601, encrypted text decrypted).
* :func:`erase_user` removes or anonymises the user everywhere in **one transaction**: their
  aliases, feedback, reminders, command usage and error events are deleted; where they appear as
  someone else's alias creator or as the moderator who handled feedback, the reference becomes
  NULL; audit rows about them are redacted (:func:`db.audit.redact_user`), which keeps the chain
  verifiable.
* :func:`run_retention` deletes data older than its configured age, per table, in small batches
  so it never holds long locks: command usage, error events, closed feedback, delivered reminders.
  The audit log is not subject to retention (deleting from a hash chain would break it).
* :func:`rotate_keys` re-encrypts every encrypted value that is not under the current key.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import audit
from . import feedback as fb
from . import reminders as rm
from . import validate as v

if TYPE_CHECKING:
    import asyncpg

    from innkeeper.settings import Settings

    from .crypto import KeyRing
    from .pool import Conn, Database

__all__ = ("export_user", "erase_user", "RetentionPolicy", "run_retention", "rotate_keys", "ENCRYPTED_COLUMNS")

_log = logging.getLogger(__name__)

# --- export ---------------------------------------------------------------------------------------
_EXPORT_ALIASES = """SELECT id, scope, scope_id, name, command, created_by, created_at FROM aliases
WHERE (scope = 'user' AND scope_id = $1) OR created_by = $1 ORDER BY id"""
_EXPORT_FEEDBACK = """SELECT id, guild_id, channel_id, author_id, body, status, created_at, acknowledged_by,
    acknowledged_at, closed_by, closed_at, resolution FROM feedback
WHERE author_id = $1 OR acknowledged_by = $1 OR closed_by = $1 ORDER BY id"""
_EXPORT_USAGE = """SELECT used_at, guild_id, channel_id, command, success, latency_ms FROM command_usage
WHERE user_id = $1 ORDER BY used_at, id"""
_EXPORT_REMINDERS = """SELECT id, user_id, guild_id, channel_id, body, created_at, due_at, claimed_by, claimed_until,
    attempts, delivered_at FROM reminders WHERE user_id = $1 ORDER BY id"""
_EXPORT_ERRORS = """SELECT id, occurred_at, code, message, command, guild_id, channel_id FROM error_events
WHERE user_id = $1 ORDER BY id"""

# --- erasure --------------------------------------------------------------------------------------
_ERASE = (
    ("aliases", "DELETE FROM aliases WHERE scope = 'user' AND scope_id = $1"),
    ("aliases_created", "UPDATE aliases SET created_by = NULL WHERE created_by = $1"),
    ("feedback", "DELETE FROM feedback WHERE author_id = $1"),
    ("feedback_ack", "UPDATE feedback SET acknowledged_by = NULL WHERE acknowledged_by = $1"),
    ("feedback_closed", "UPDATE feedback SET closed_by = NULL WHERE closed_by = $1"),
    ("reminders", "DELETE FROM reminders WHERE user_id = $1"),
    ("command_usage", "DELETE FROM command_usage WHERE user_id = $1"),
    ("error_events", "DELETE FROM error_events WHERE user_id = $1"),
)

# --- retention ------------------------------------------------------------------------------------
_RETENTION = {
    "command_usage": """DELETE FROM command_usage WHERE id IN (
    SELECT id FROM command_usage WHERE used_at < $1 LIMIT $2)""",
    "error_events": """DELETE FROM error_events WHERE id IN (
    SELECT id FROM error_events WHERE occurred_at < $1 LIMIT $2)""",
    "feedback": """DELETE FROM feedback WHERE id IN (
    SELECT id FROM feedback WHERE closed_at < $1 AND status IN ('resolved', 'rejected') LIMIT $2)""",
    "reminders": """DELETE FROM reminders WHERE id IN (
    SELECT id FROM reminders WHERE delivered_at < $1 LIMIT $2)""",
}

# --- rotation -------------------------------------------------------------------------------------
#: (table, column, encryption context) of every encrypted column.
ENCRYPTED_COLUMNS = (
    ("feedback", "body", fb.BODY_CONTEXT),
    ("feedback", "resolution", fb.RESOLUTION_CONTEXT),
    ("reminders", "body", rm.BODY_CONTEXT),
)
_STALE = {
    ("feedback", "body"): """SELECT id, body AS value FROM feedback
WHERE id > $2 AND NOT starts_with(body, $1) ORDER BY id LIMIT $3""",
    ("feedback", "resolution"): """SELECT id, resolution AS value FROM feedback
WHERE id > $2 AND resolution IS NOT NULL AND NOT starts_with(resolution, $1) ORDER BY id LIMIT $3""",
    ("reminders", "body"): """SELECT id, body AS value FROM reminders
WHERE id > $2 AND NOT starts_with(body, $1) ORDER BY id LIMIT $3""",
}
_REWRITE = {
    ("feedback", "body"): "UPDATE feedback SET body = $3 WHERE id = $1 AND body = $2",
    ("feedback", "resolution"): "UPDATE feedback SET resolution = $3 WHERE id = $1 AND resolution = $2",
    ("reminders", "body"): "UPDATE reminders SET body = $3 WHERE id = $1 AND body = $2",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def _row(record: asyncpg.Record, *, ids: tuple[str, ...] = (), decrypt: dict[str, str] | None = None,
         keys: KeyRing | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if value is not None and decrypt and key in decrypt and keys is not None:
            value = keys.decrypt(value, context=decrypt[key])
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
        "feedback": [_row(r, decrypt=fb_decrypt, keys=keys) for r in feedback],
        "command_usage": [_row(r) for r in usage],
        "reminders": [_row(r, decrypt={"body": rm.BODY_CONTEXT}, keys=keys) for r in reminders],
        "error_events": [_row(r) for r in errors],
        "audit_log": [
            {"id": str(e.id), "guild_id": None if e.guild_id is None else str(e.guild_id),
             "actor_id": None if e.actor_id is None else str(e.actor_id), "action": e.action,
             "target_id": None if e.target_id is None else str(e.target_id), "target": e.target,
             "details": e.details, "created_at": e.created_at.isoformat()}
            for e in entries
        ],
    }


async def erase_user(db: Database, user_id: int, *, conn: Conn | None = None) -> dict[str, int]:
    """Erase ``user_id`` from every table in one transaction; returns the rows touched per table.

    Pass ``conn`` to run inside your own transaction.
    """
    uid = v.snowflake("user id", user_id)
    if conn is None:
        async with db.transaction() as tx:
            return await erase_user(db, uid, conn=tx)
    counts: dict[str, int] = {}
    for name, sql in _ERASE:
        status = await db.execute(f"privacy.erase_{name}", sql, uid, conn=conn)
        counts[name] = int(status.rsplit(" ", 1)[-1])
    counts["audit_log"] = await audit.redact_user(db, uid, conn=conn)
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
                        batch: int = 5000) -> dict[str, int]:
    """Delete rows past their table's age, ``batch`` rows per statement; returns the deletions per table."""
    now = now or dt.datetime.now(dt.UTC)
    deleted: dict[str, int] = {}
    for table, days in policy.ages().items():
        deleted[table] = 0
        if days <= 0:
            continue
        cutoff = now - dt.timedelta(days=days)
        while True:
            status = await db.execute(f"retention.{table}", _RETENTION[table], cutoff, batch, idempotent=True)
            n = int(status.rsplit(" ", 1)[-1])
            deleted[table] += n
            if n < batch:
                break
    _log.info("retention deleted old rows", extra={"rows": deleted})
    return deleted


async def rotate_keys(db: Database, keys: KeyRing, *, batch: int = 500) -> dict[str, int]:
    """Re-encrypt every value of :data:`ENCRYPTED_COLUMNS` not under the current key.

    Each value is decrypted with the key it names (all old keys must still be configured) and
    written back under the current key, only if it did not change meanwhile. Returns the number of
    values re-encrypted per ``table.column``.
    """
    prefix = f"v1:{keys.current}:"
    done: dict[str, int] = {}
    for table, column, context in ENCRYPTED_COLUMNS:
        key = (table, column)
        count, last_id = 0, 0
        while True:
            rows = await db.fetch(f"rotate.select_{table}_{column}", _STALE[key], prefix, last_id, batch)
            for r in rows:
                fresh = keys.encrypt(keys.decrypt(r["value"], context=context), context=context)
                status = await db.execute(f"rotate.update_{table}_{column}", _REWRITE[key], r["id"], r["value"],
                                          fresh, idempotent=True)
                count += int(status.endswith(" 1"))
                last_id = r["id"]
            if len(rows) < batch:
                break
        done[f"{table}.{column}"] = count
    _log.info("re-encrypted values under key %s", keys.current, extra={"rows": done})
    return done
