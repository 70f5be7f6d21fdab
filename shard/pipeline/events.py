"""What the pipeline reports about each invocation, and the protocols of where it goes.

:class:`UsageEvent` (one per invocation), :class:`AuditEvent` (audited admin actions and refused
attempts at them) and :class:`ErrorEvent` (unexpected failures). The pipeline only knows the sink
protocols; ``shard/pipeline/sinks.py`` writes them to the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

__all__ = ("UsageEvent", "AuditEvent", "ErrorEvent", "UsageSink", "AuditSink", "ErrorSink")


class UsageEvent:
    """One command use, as the usage recorder stores it."""

    __slots__ = ("used_at", "guild_id", "channel_id", "user_id", "command", "cluster_id", "shard_id", "success",
                 "latency_ms")

    def __init__(self, *, used_at: datetime, guild_id: int | None, channel_id: int | None, user_id: int,
                 command: str, cluster_id: int, shard_id: int | None, success: bool, latency_ms: float) -> None:
        self.used_at = used_at
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.command = command
        self.cluster_id = cluster_id
        self.shard_id = shard_id
        self.success = success
        self.latency_ms = latency_ms


class AuditEvent:
    """One audited admin action (or refused attempt)."""

    __slots__ = ("guild_id", "actor_id", "action", "target_id", "target", "details")

    def __init__(self, *, guild_id: int | None, actor_id: int, action: str, target_id: int | None,
                 target: str | None, details: dict[str, Any]) -> None:
        self.guild_id = guild_id
        self.actor_id = actor_id
        self.action = action
        self.target_id = target_id
        self.target = target
        self.details = details


class ErrorEvent:
    """An unexpected failure, stored for operators."""

    __slots__ = ("code", "message", "command", "guild_id", "channel_id", "user_id", "cluster_id", "shard_id")

    def __init__(self, *, code: str, message: str, command: str | None, guild_id: int | None,
                 channel_id: int | None, user_id: int | None, cluster_id: int, shard_id: int | None) -> None:
        self.code = code
        self.message = message
        self.command = command
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.cluster_id = cluster_id
        self.shard_id = shard_id


class UsageSink(Protocol):
    def record(self, event: UsageEvent) -> None: ...


class AuditSink(Protocol):
    async def append(self, event: AuditEvent) -> None: ...


class ErrorSink(Protocol):
    async def record(self, event: ErrorEvent) -> None: ...
