"""Guild configuration for the pipeline: the database behind a small local cache and the shared cache.

:class:`GuildConfigStore` answers :meth:`get` from a per-process TTL cache first (every prefix
message asks for the guild's prefix, so the hot path does no I/O), then from the shared Redis
cache (``ipc.cache.SharedCache``, when the process has one), then from PostgreSQL (guild settings,
role levels and command overrides). While PostgreSQL is unreachable, misses fail fast for a few
seconds (a small circuit breaker) so that messages do not each wait on connection retries. Every
write goes through the ``db`` module and is followed by :meth:`invalidate`, which drops the local
entry and publishes the invalidation to every cluster through the shared cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from db import guilds as db_guilds
from db import permissions as db_permissions
from innkeeper.errors import DatabaseError, ErrorCode

from .config import GuildConfig, Override
from .levels import Level

if TYPE_CHECKING:
    from db.pool import Database

__all__ = ("GuildConfigStore", "SharedCacheLike", "load_guild_config", "CACHE_NAMESPACE")

_log = logging.getLogger(__name__)

CACHE_NAMESPACE = "guildcfg"


class SharedCacheLike(Protocol):
    """The part of ``ipc.cache.SharedCache`` the store uses."""

    async def get(self, namespace: str, key: str) -> Any: ...

    async def set(self, namespace: str, key: str, value: Any, *, ttl: float | None = None) -> None: ...

    async def invalidate(self, namespace: str, key: str) -> None: ...


async def load_guild_config(db: Database, guild_id: int) -> GuildConfig:
    """Read one guild's configuration from PostgreSQL (three indexed lookups)."""
    settings = await db_guilds.get_settings(db, guild_id)
    roles = await db_permissions.get_role_levels(db, guild_id)
    overrides = await db_permissions.list_command_overrides(db, guild_id)
    return GuildConfig(
        guild_id=guild_id, prefix=settings.prefix, features=dict(settings.features),
        log_channel_id=settings.log_channel_id, automod_level=settings.automod_level,
        role_levels={rid: Level(min(int(lv), Level.ADMIN)) for rid, lv in roles.items()},
        overrides={o.command: Override(None if o.min_level is None else Level(o.min_level), o.enabled)
                   for o in overrides},
    )


class GuildConfigStore:
    """Cached guild configuration (see the module docstring).

    Parameters
    ----------
    db:
        The database.
    shared:
        The shared cache, or ``None`` for a process without one.
    ttl:
        Seconds an entry stays in the local and the shared cache.
    max_entries:
        Local entries kept before the oldest half is dropped.
    """

    __slots__ = ("db", "shared", "ttl", "max_entries", "down_cooldown", "_local", "_clock", "_down_until")

    def __init__(self, db: Database, *, shared: SharedCacheLike | None = None, ttl: float = 300.0,
                 max_entries: int = 50_000, down_cooldown: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.down_cooldown = down_cooldown
        self._down_until = 0.0
        self.shared = shared
        self.ttl = ttl
        self.max_entries = max_entries
        self._local: dict[int, tuple[float, GuildConfig]] = {}
        self._clock = clock

    def peek(self, guild_id: int) -> GuildConfig | None:
        entry = self._local.get(guild_id)
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1]

    async def get(self, guild_id: int) -> GuildConfig:
        cached = self.peek(guild_id)
        if cached is not None:
            return cached
        cfg: GuildConfig | None = None
        if self.shared is not None:
            try:
                raw = await self.shared.get(CACHE_NAMESPACE, str(guild_id))
                if raw is not None:
                    cfg = GuildConfig.from_wire(raw)
            except Exception as exc:  # a bad or unreachable cache entry must not stop a command
                _log.warning("shared cache read for guild %s failed: %s", guild_id, exc)
        if cfg is None:
            if self._clock() < self._down_until:
                raise DatabaseError("the database was unavailable moments ago", code=ErrorCode.DB_UNAVAILABLE)
            try:
                cfg = await load_guild_config(self.db, guild_id)
            except DatabaseError as exc:
                if exc.code is ErrorCode.DB_UNAVAILABLE:
                    # fail fast for a few seconds instead of every message waiting on retries
                    self._down_until = self._clock() + self.down_cooldown
                raise
            if self.shared is not None:
                try:
                    await self.shared.set(CACHE_NAMESPACE, str(guild_id), cfg.to_wire(), ttl=self.ttl)
                except Exception as exc:
                    _log.warning("shared cache write for guild %s failed: %s", guild_id, exc)
        self._remember(cfg)
        return cfg

    def _remember(self, cfg: GuildConfig) -> None:
        if len(self._local) >= self.max_entries:
            for key in sorted(self._local, key=lambda k: self._local[k][0])[: self.max_entries // 2]:
                del self._local[key]
        self._local[cfg.guild_id] = (self._clock() + self.ttl, cfg)

    def drop_local(self, guild_id: int) -> None:
        """Forget the local entry (called when another cluster invalidated it)."""
        self._local.pop(guild_id, None)

    async def invalidate(self, guild_id: int) -> None:
        """Forget the guild everywhere after a write."""
        self.drop_local(guild_id)
        if self.shared is not None:
            try:
                await self.shared.invalidate(CACHE_NAMESPACE, str(guild_id))
            except Exception as exc:
                _log.warning("shared cache invalidation for guild %s failed: %s", guild_id, exc)
