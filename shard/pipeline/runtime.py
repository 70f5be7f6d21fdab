"""Everything the command layer needs at run time, built once per cluster: :class:`CommandRuntime`.

It owns the database pool, the encryption key ring, the shared cache and the guild configuration
store in front of it, the usage recorder, the shared throttle and the
:class:`~shard.pipeline.core.Pipeline`, and it is a ``BotService``: ``ClusterBot`` starts it before
the gateway connects and stops it on shutdown.

Start-up policy
---------------
* A malformed ``INNKEEPER_ENCRYPTION_KEYS`` stops the cluster (a ``ConfigError``). When it is
  unset, the features that store user text (feedback, reminders, privacy export) answer with a
  clear message, and the rest of the bot runs.
* PostgreSQL unreachable at start-up does not stop the cluster: it keeps connecting in the
  background with backoff. Meanwhile the core commands run with the default guild configuration
  and every other command answers "the database is unavailable" (fail closed).
* A schema older than this code needs stops the cluster (run ``innkeeper migrate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from db import audit as db_audit
from db import errors_log as db_errors
from db.crypto import KeyRing
from db.migrate import require_schema
from db.pool import Database
from db.usage import UsageRecorder
from innkeeper.errors import CommandError, DatabaseError, ErrorCode, IPCError
from ipc.cache import SharedCache

from .core import AuditEvent, ErrorEvent, Pipeline, UsageEvent
from .store import GuildConfigStore
from .throttling import RedisThrottle, Throttle

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("CommandRuntime",)

_log = logging.getLogger(__name__)


class _Usage:
    __slots__ = ("recorder",)

    def __init__(self, recorder: UsageRecorder) -> None:
        self.recorder = recorder

    def record(self, event: UsageEvent) -> None:
        self.recorder.record(user_id=event.user_id, command=event.command, guild_id=event.guild_id,
                             channel_id=event.channel_id, success=event.success, latency_ms=event.latency_ms,
                             cluster_id=event.cluster_id, shard_id=event.shard_id, used_at=event.used_at)


class _Audit:
    __slots__ = ("db",)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, event: AuditEvent) -> None:
        await db_audit.append(self.db, event.action, guild_id=event.guild_id, actor_id=event.actor_id,
                              target_id=event.target_id, target=event.target, details=event.details)


class _Errors:
    __slots__ = ("db",)

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, event: ErrorEvent) -> None:
        await db_errors.record_error(self.db, code=event.code, message=event.message, command=event.command,
                                     guild_id=event.guild_id, channel_id=event.channel_id, user_id=event.user_id,
                                     cluster_id=event.cluster_id, shard_id=event.shard_id)


class CommandRuntime:
    """The command layer's resources for one cluster (see the module docstring).

    Parameters
    ----------
    bot:
        The cluster's bot.
    throttle:
        The throttle implementation; the shared Redis one when ``None``.
    """

    def __init__(self, bot: ClusterBot, *, throttle: Throttle | None = None) -> None:
        settings = bot.settings
        self.bot = bot
        self.db = Database.from_settings(settings, connect_timeout=5.0)
        self.keys: KeyRing | None = None
        self.cache = SharedCache(bot.redis, bot.keys)
        self.guild_config = GuildConfigStore(self.db, shared=self.cache)
        self.usage = UsageRecorder(self.db)
        self.throttle: Throttle = throttle or RedisThrottle(bot.redis, bot.keys)
        self.pipeline = Pipeline(settings, cluster_id=bot.cluster_id, config=self.guild_config,
                                 throttle=self.throttle, usage=_Usage(self.usage), audit=_Audit(self.db),
                                 errors=_Errors(self.db))
        self.schema_version: int | None = None
        self._connector: asyncio.Task[None] | None = None
        bot.tree.error(self.pipeline.on_app_command_error)

    # --- BotService ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.bot.settings.encryption_keys:
            self.keys = KeyRing.parse(self.bot.settings.encryption_keys)
        else:
            _log.warning("INNKEEPER_ENCRYPTION_KEYS is not set: feedback, reminders and privacy export are off")
        try:
            await self.db.connect()
        except DatabaseError as exc:
            if exc.code is not ErrorCode.DB_UNAVAILABLE:
                raise
            _log.warning("database unavailable at start-up (%s); core commands only until it is back", exc)
            self._connector = asyncio.create_task(self._keep_connecting(), name="db-connect")
        else:
            self.schema_version = await require_schema(self.db)
        try:
            await self.cache.start()
        except IPCError as exc:
            _log.warning("shared cache unavailable (%s); caching guild configuration in this process only", exc)
            self.guild_config.shared = None
        self.usage.start()

    async def stop(self) -> None:
        if self.guild_config.shared is not None:
            await self.cache.stop()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
            self._connector = None
        try:
            await self.usage.close()
        except DatabaseError as exc:
            _log.warning("lost %d usage rows at shutdown: %s", len(self.usage), exc)
        await self.pipeline.drain()
        await self.db.close()

    async def _keep_connecting(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await self.db.connect()
                self.schema_version = await require_schema(self.db)
            except DatabaseError as exc:
                if exc.code is ErrorCode.DB_SCHEMA_OUTDATED:
                    _log.critical("%s; commands that need the database stay off", exc)
                    await self.db.close()
                    return
                delay = min(delay * 2, 30.0)
                _log.info("database still unavailable (%s); next try in %.0f s", exc, delay)
                continue
            _log.info("database connected (schema version %s)", self.schema_version)
            return

    # --- helpers for cogs -----------------------------------------------------------------------
    def require_keys(self) -> KeyRing:
        """The key ring, or a user-facing error when encryption is not configured."""
        if self.keys is None:
            raise CommandError("This bot has no encryption key configured, so it can't store your text; "
                               "ask the bot's owner to set INNKEEPER_ENCRYPTION_KEYS.",
                               code=ErrorCode.COMMAND_DISABLED)
        return self.keys

    def describe(self) -> dict[str, Any]:
        """A small summary for ``/debug`` and ``/health``."""
        return {"schema_version": self.schema_version, "encryption": self.keys is not None,
                "usage_buffered": len(self.usage), "usage_dropped": self.usage.dropped,
                "throttle": type(self.throttle).__name__}
