"""What the commands are given: :class:`CommandDeps`, built once per cluster by ``shard/assembly.py``.

discord.py hands an extension only the bot (``async def setup(bot)``), so the bot carries one
typed bundle, ``ClusterBot.deps``, and :class:`~shard.cogs.base.PipelineCog` reads it. The
bundle holds the command layer's collaborators; each is owned (started and stopped) elsewhere, by
the cluster's service stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from innkeeper.errors import CommandError, ErrorCode

if TYPE_CHECKING:
    from db.crypto import KeyRing
    from db.pool import Database
    from db.pseudonyms import Pseudonyms
    from db.usage import UsageRecorder
    from innkeeper.breakers import Breakers
    from innkeeper.settings import Settings

    from ..channel_access import RefusedTargets
    from ..status_report import StatusReporter
    from .alias_cache import AliasCache
    from .core import Pipeline
    from .store import GuildConfigStore
    from .throttling import Throttle

__all__ = ("CommandDeps", "DatabaseState")


class DatabaseState(Protocol):
    """Whether the database is connected with the schema this code needs."""

    @property
    def schema_version(self) -> int | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandDeps:
    """The command layer's collaborators.

    Attributes
    ----------
    settings, cluster_id:
        The process's settings and this cluster's id.
    db, database:
        The database and its state (schema version, or None while unavailable).
    key_ring:
        Encrypts the text users store; None when ``INNKEEPER_ENCRYPTION_KEYS`` is not set.
    pseudonyms:
        Replaces erased users in the audit log; None when neither ``INNKEEPER_PSEUDONYM_KEY`` nor
        ``INNKEEPER_ENCRYPTION_KEYS`` is set.
    guild_config:
        Cached guild configuration.
    aliases:
        Cached alias tables (invalidated when aliases change).
    refused:
        Channels and DMs that refused the bot recently (shared with reminder delivery): a private
        answer is not sent again to DMs that just refused one.
    usage:
        The batched command-usage recorder.
    throttle:
        The throttle behind the pipeline (for ``/debug``).
    pipeline:
        The one command pipeline.
    status:
        Gathers ``/status``.
    ping_redis:
        Pings Redis, for ``/health``.
    breakers:
        The process's circuit breakers, for ``/health`` (None: not shown).
    """

    settings: Settings
    cluster_id: int
    db: Database
    database: DatabaseState
    key_ring: KeyRing | None
    pseudonyms: Pseudonyms | None
    guild_config: GuildConfigStore
    aliases: AliasCache
    refused: RefusedTargets
    usage: UsageRecorder
    throttle: Throttle
    pipeline: Pipeline
    status: StatusReporter
    ping_redis: Callable[[], Awaitable[Any]]
    breakers: Breakers | None = None

    def require_keys(self) -> KeyRing:
        """The key ring, or a user-facing error when encryption is not configured."""
        if self.key_ring is None:
            raise CommandError("This bot has no encryption key configured, so it can't store your text; "
                               "ask the bot's owner to set INNKEEPER_ENCRYPTION_KEYS.",
                               code=ErrorCode.COMMAND_DISABLED)
        return self.key_ring

    def require_pseudonyms(self) -> Pseudonyms:
        """The audit log's pseudonyms, or a user-facing error when no key is configured for them."""
        if self.pseudonyms is None:
            raise CommandError("This bot has no key configured to keep its audit log accountable, so it can't "
                               "erase data yet; ask the bot's owner to set INNKEEPER_PSEUDONYM_KEY.",
                               code=ErrorCode.COMMAND_DISABLED)
        return self.pseudonyms

    def describe(self) -> dict[str, Any]:
        """A small summary for ``/debug`` and ``/health``."""
        return {"schema_version": self.database.schema_version, "encryption": self.key_ring is not None,
                "usage_buffered": len(self.usage), "usage_dropped": self.usage.dropped,
                "throttle": type(self.throttle).__name__}
