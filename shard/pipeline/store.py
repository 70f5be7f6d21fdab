"""Guild configuration for the pipeline: PostgreSQL behind the shared cache.

:class:`GuildConfigStore` answers :meth:`get` from ``ipc.cache.SharedCache`` when the process has
one: its per-process layer makes the hot path (every prefix message asks for the guild's prefix)
a dictionary lookup, Redis serves the other clusters, and PostgreSQL (guild settings, role levels
and command overrides) is read once per guild per TTL, by one caller (single flight). Without a
shared cache (tests), and until the shared cache first connects (Redis was down at start-up), a
local TTL dictionary stands in.

Every write goes through the ``db`` module and is followed by :meth:`invalidate`, which deletes the
entry in Redis and, over pub/sub, in every cluster's local layer. The shared cache checks a
generation per key when it stores a load, so a load that read PostgreSQL before the write cannot
put the old configuration back after the invalidation (a revoked level stays revoked). An
invalidation made while Redis is unreachable (even before the shared cache first connected) is
retried by the cache until Redis answers. While PostgreSQL is unreachable, misses fail fast for a
few seconds (a small circuit breaker) so that messages do not each wait on connection retries.

**Failing closed.** A guild's overrides (a command turned off, a level raised) must not vanish while
PostgreSQL is down, so the store keeps the *last known* configuration of every guild it has served
(a bounded LRU in this process, kept past the cache TTL) and answers with it when a load fails
(``innkeeper_guild_config_stale_total`` counts those answers). Only a guild this process never read
gets the ``DatabaseError``; the pipeline then refuses every command a guild could change. The last
known configuration is dropped by :meth:`invalidate` (after a write the old value is no longer the
guild's), and a load that overlapped a write is not remembered as the last known one.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter

from db import guilds as db_guilds
from db import permissions as db_permissions
from innkeeper.errors import DatabaseError, ErrorCode, InnkeeperError

from .config import GuildConfig, Override
from .levels import Level

if TYPE_CHECKING:
    from db.pool import Database

__all__ = ("GuildConfigStore", "SharedCacheLike", "ConfigLoader", "load_guild_config", "CACHE_NAMESPACE")

_log = logging.getLogger(__name__)

CACHE_NAMESPACE = "guildcfg"

STALE_ANSWERS = Counter("innkeeper_guild_config_stale_total",
                        "Guild configurations answered from the last known copy because the database failed")


class SharedCacheLike(Protocol):
    """The part of ``ipc.cache.SharedCache`` the store uses."""

    @property
    def connected(self) -> bool: ...

    async def get_or_load(self, namespace: str, key: str | int, loader: Callable[[], Awaitable[Any]], *,
                          ttl: float | None = None) -> Any: ...

    async def delete(self, namespace: str, *keys: str | int) -> None: ...

    def peek_local(self, namespace: str, key: str | int) -> tuple[bool, Any]: ...

    async def prefetch(self, namespace: str, keys: Iterable[str | int],
                       load_many: Callable[[list[str]], Awaitable[dict[str, Any]]], *,
                       ttl: float | None = None) -> int: ...


ConfigLoader = Callable[["Database", int], Awaitable[GuildConfig]]


async def load_guild_config(db: Database, guild_id: int) -> GuildConfig:
    """Read one guild's configuration from PostgreSQL (three indexed lookups)."""
    settings = await db_guilds.get_settings(db, guild_id)
    roles = await db_permissions.get_role_levels(db, guild_id)
    overrides = await db_permissions.list_command_overrides(db, guild_id)
    return _config(settings, roles, overrides)


async def load_guild_configs(db: Database, guild_ids: list[int]) -> dict[int, GuildConfig]:
    """Read many guilds' configurations from PostgreSQL in three queries (``= ANY``), whatever their number."""
    settings = await db_guilds.get_settings_many(db, guild_ids)
    roles = await db_permissions.get_role_levels_many(db, guild_ids)
    overrides = await db_permissions.list_command_overrides_many(db, guild_ids)
    return {g: _config(settings[g], roles[g], overrides[g]) for g in settings}


def _config(settings: db_guilds.GuildSettings, roles: Mapping[int, int],
            overrides: Iterable[db_permissions.CommandOverride]) -> GuildConfig:
    return GuildConfig(
        guild_id=settings.guild_id, prefix=settings.prefix, features=dict(settings.features),
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
        The shared cache, or ``None`` to cache in this process only.
    ttl:
        Seconds an entry lives (in Redis, or locally without a shared cache).
    standalone_ttl:
        Seconds an entry lives locally while the shared cache has not connected yet: other clusters'
        invalidations cannot reach this process then, so a write elsewhere shows after at most this.
    max_entries:
        Guilds kept in each local layer (the fresh one and the last known one).
    down_cooldown:
        Seconds misses fail fast after PostgreSQL was found unreachable.
    load:
        Reads one guild's configuration from the database (:func:`load_guild_config`; tests wrap it
        to force an interleaving).
    """

    __slots__ = ("db", "shared", "ttl", "standalone_ttl", "max_entries", "down_cooldown", "_load_config", "_local",
                 "_parsed", "_clock", "_down_until", "_shared_up", "_writes", "_known")

    def __init__(self, db: Database, *, shared: SharedCacheLike | None = None, ttl: float = 300.0,
                 standalone_ttl: float = 5.0, max_entries: int = 50_000, down_cooldown: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, load: ConfigLoader | None = None) -> None:
        self.db = db
        self._load_config = load
        self.shared = shared
        self.ttl = ttl
        self.standalone_ttl = standalone_ttl
        self.max_entries = max_entries
        self.down_cooldown = down_cooldown
        self._local: dict[int, tuple[float, GuildConfig]] = {}
        #: guild → (the wire dict the shared cache returned, its parsed form): parse each value once
        self._parsed: dict[int, tuple[Any, GuildConfig]] = {}
        self._clock = clock
        self._down_until = 0.0
        self._shared_up = False
        #: Invalidations so far: a load that overlapped one is not remembered (locally, or as last known).
        self._writes = 0
        #: guild → the last configuration served: the answer while the database is unreachable
        self._known: collections.OrderedDict[int, GuildConfig] = collections.OrderedDict()

    def _use_shared(self) -> bool:
        """True once the shared cache has connected (it then handles Redis outages itself)."""
        if not self._shared_up and self.shared is not None and self.shared.connected:
            self._shared_up = True
            self._local.clear()  # what was cached alone heard no invalidations
            _log.info("shared cache connected: guild configuration is shared across clusters")
        return self._shared_up

    async def get(self, guild_id: int) -> GuildConfig:
        """The guild's configuration; the last known one when the database cannot be read.

        Raises
        ------
        DatabaseError
            When it is neither cached nor known and PostgreSQL cannot be read (``DB_UNAVAILABLE``
            when it cannot be reached).
        """
        writes = self._writes
        try:
            cfg = await self._get(guild_id)
        except DatabaseError as exc:
            known = self._known.get(guild_id)
            if known is None:
                raise
            STALE_ANSWERS.inc()
            _log.debug("guild %s: the database failed (%s); answering with its last known configuration",
                       guild_id, exc)
            return known
        if self._writes == writes:  # a load that overlapped a write may be older than it
            self._know(cfg)
        return cfg

    def cached_config(self, guild_id: int) -> GuildConfig | None:
        """The guild's configuration when this process holds a fresh copy of it, else ``None``.

        Synchronous and free of I/O, for the decisions made inside discord.py's event parsers (the
        lean message filter, automod): it answers what :meth:`get` would answer right now, and says
        ``None`` when only a load could tell (never loaded, expired, invalidated).
        """
        if self._use_shared() and self.shared is not None:
            found, raw = self.shared.peek_local(CACHE_NAMESPACE, guild_id)
            if not found:
                return None
            memo = self._parsed.get(guild_id)
            if memo is not None and memo[0] is raw:
                return memo[1]
            try:
                cfg = GuildConfig.from_wire(raw)
            except (KeyError, TypeError, ValueError):
                return None
            if len(self._parsed) >= self.max_entries:
                self._parsed.clear()
            self._parsed[guild_id] = (raw, cfg)
            return cfg
        entry = self._local.get(guild_id)
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1]

    def cached_prefix(self, guild_id: int) -> tuple[bool, str | None]:
        """``(True, prefix)`` when this process holds a fresh copy of the guild's configuration, else ``(False, None)``.

        ``prefix`` is None when the guild uses the default (see :meth:`cached_config`).
        """
        cfg = self.cached_config(guild_id)
        return (False, None) if cfg is None else (True, cfg.prefix)

    def cached_automod_level(self, guild_id: int) -> tuple[bool, int]:
        """``(True, level)`` when this process holds a fresh copy of the guild's configuration, else ``(False, 0)``.

        ``level`` indexes :data:`~shard.pipeline.config.AUTOMOD_NAMES` (0 is off; see :meth:`cached_config`).
        """
        cfg = self.cached_config(guild_id)
        return (False, 0) if cfg is None else (True, cfg.automod_level)

    async def prefetch(self, guild_ids: Iterable[int], *, batch: int = 500) -> int:
        """Cache the configuration of every guild in ``guild_ids`` not cached here yet (a shard's READY).

        Through the shared cache, in batches of ``batch`` guilds: one Redis read per batch, three
        queries per batch for what Redis lacks, one Redis write (see
        :meth:`~ipc.cache.SharedCache.prefetch`). Nothing happens before the shared cache connects
        or when the database fails (each guild then loads on its first message, as without this).

        Returns
        -------
        int
            Guilds newly cached.
        """
        if not self._use_shared() or self.shared is None or self._load_config is not None:
            return 0
        shared = self.shared
        ids = list(dict.fromkeys(guild_ids))
        done = 0
        for start in range(0, len(ids), batch):
            chunk = ids[start:start + batch]

            async def load_many(keys: list[str]) -> dict[str, Any]:
                if self._clock() < self._down_until:
                    return {}
                configs = await load_guild_configs(self.db, [int(k) for k in keys])
                return {str(g): cfg.to_wire() for g, cfg in configs.items()}

            try:
                done += await shared.prefetch(CACHE_NAMESPACE, chunk, load_many, ttl=self.ttl)
            except DatabaseError as exc:
                _log.warning("guild configuration prefetch stopped: %s", exc)
                break
        return done

    def _know(self, cfg: GuildConfig) -> None:
        known = self._known
        if known.get(cfg.guild_id) is not cfg:
            known[cfg.guild_id] = cfg
        known.move_to_end(cfg.guild_id)
        while len(known) > self.max_entries:
            known.popitem(last=False)

    async def _get(self, guild_id: int) -> GuildConfig:
        if not self._use_shared() or self.shared is None:
            entry = self._local.get(guild_id)
            if entry is not None and entry[0] >= self._clock():
                return entry[1]
            writes = self._writes
            cfg = await self._load(guild_id)
            if self._writes == writes:
                self._remember(cfg)
            return cfg
        try:
            raw = await self.shared.get_or_load(CACHE_NAMESPACE, guild_id, lambda: self._load_wire(guild_id),
                                                ttl=self.ttl)
        except DatabaseError:
            raise
        except InnkeeperError as exc:  # the cache itself failed: read the database directly
            _log.warning("shared cache failed for guild %s (%s); reading the database", guild_id, exc)
            return await self._load(guild_id)
        memo = self._parsed.get(guild_id)
        if memo is not None and memo[0] is raw:
            return memo[1]
        try:
            cfg = GuildConfig.from_wire(raw)
        except (KeyError, TypeError, ValueError) as exc:  # a foreign or corrupt entry: rebuild it
            _log.warning("bad cached configuration for guild %s (%s); reloading", guild_id, exc)
            await self.invalidate(guild_id)
            return await self._load(guild_id)
        if len(self._parsed) >= self.max_entries:
            self._parsed.clear()
        self._parsed[guild_id] = (raw, cfg)
        return cfg

    async def _load_wire(self, guild_id: int) -> dict[str, Any]:
        return (await self._load(guild_id)).to_wire()

    async def _load(self, guild_id: int) -> GuildConfig:
        if self._clock() < self._down_until:
            raise DatabaseError("the database was unavailable moments ago", code=ErrorCode.DB_UNAVAILABLE)
        try:
            return await (self._load_config or load_guild_config)(self.db, guild_id)
        except DatabaseError as exc:
            if exc.code is ErrorCode.DB_UNAVAILABLE:
                self._down_until = self._clock() + self.down_cooldown
            raise

    def _remember(self, cfg: GuildConfig) -> None:
        if len(self._local) >= self.max_entries:
            for key in sorted(self._local, key=lambda k: self._local[k][0])[: self.max_entries // 2]:
                del self._local[key]
        ttl = self.ttl if self.shared is None else min(self.ttl, self.standalone_ttl)
        self._local[cfg.guild_id] = (self._clock() + ttl, cfg)

    async def invalidate(self, guild_id: int) -> None:
        """Forget the guild everywhere after a write (its last known configuration too).

        The shared entry is invalidated even before the shared cache first connected: Redis may
        still hold a copy from before, which every cluster would read once it is back.
        """
        self._writes += 1
        self._known.pop(guild_id, None)
        self._local.pop(guild_id, None)
        self._parsed.pop(guild_id, None)
        if self.shared is not None:
            try:
                await self.shared.delete(CACHE_NAMESPACE, guild_id)
            except InnkeeperError as exc:
                _log.warning("shared cache invalidation for guild %s failed (retried until Redis answers): %s",
                             guild_id, exc)
