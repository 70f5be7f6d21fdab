"""Where the pipeline's events go in a cluster: the usage recorder, the audit log and the error log.

The pipeline (:mod:`shard.pipeline.core`) only knows the sink protocols (``UsageSink``, ``AuditSink``,
``ErrorSink`` in :mod:`shard.pipeline.events`); these adapters write to the ``db`` modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db import audit as db_audit
from db import error_events as db_errors

if TYPE_CHECKING:
    from db.pool import Database
    from db.usage import UsageRecorder

    from .events import AuditEvent, ErrorEvent, UsageEvent

__all__ = ("UsageToDatabase", "AuditToDatabase", "ErrorsToDatabase")


class UsageToDatabase:
    """Records each command use in the batched usage recorder."""

    __slots__ = ("recorder",)

    def __init__(self, recorder: UsageRecorder) -> None:
        self.recorder = recorder

    def record(self, event: UsageEvent) -> None:
        self.recorder.record(user_id=event.user_id, command=event.command, guild_id=event.guild_id,
                             channel_id=event.channel_id, success=event.success, latency_ms=event.latency_ms,
                             cluster_id=event.cluster_id, shard_id=event.shard_id, used_at=event.used_at)


class AuditToDatabase:
    """Appends audited actions to the guild's hash-chained audit log."""

    __slots__ = ("db",)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, event: AuditEvent) -> None:
        await db_audit.append(self.db, event.action, guild_id=event.guild_id, actor_id=event.actor_id,
                              target_id=event.target_id, target=event.target, details=event.details)


class ErrorsToDatabase:
    """Stores unexpected failures for operators."""

    __slots__ = ("db",)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, event: ErrorEvent) -> None:
        await db_errors.record_error(self.db, code=event.code, message=event.message, command=event.command,
                                     guild_id=event.guild_id, channel_id=event.channel_id, user_id=event.user_id,
                                     cluster_id=event.cluster_id, shard_id=event.shard_id)
