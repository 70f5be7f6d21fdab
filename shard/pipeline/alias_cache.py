"""What alias names mean, cached per guild and per user, negative answers included.

Every ``!<word>`` that is not a command asks whether the word is an alias, so the lookup must not
cost a query each time (a user typing ``!asdf`` in a loop would otherwise drive one query per
message). :class:`AliasCache` holds each scope's whole table, ``{name: command line}``: the guild's
aliases under ``g<guild id>``, a user's personal aliases under ``u<user id>`` (at most
``db.aliases.MAX_ALIASES_PER_SCOPE`` each, most of them empty). A lookup reads the user's table, then
the guild's (a personal alias wins, as in ``db.aliases.resolve_alias``); a word in neither is a
negative answer straight from the cache.

Tables live in the shared cache (``ipc.cache.SharedCache``: Redis behind a per-process layer, one
loader per key) once it has connected, and in a local TTL dictionary before that. Creating,
deleting or erasing aliases calls :meth:`invalidate`, which drops the scope's table in Redis and,
over pub/sub, on every cluster: a personal alias works in every server, so its user's table may be
cached by any cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from db import aliases as db_aliases
from innkeeper.errors import DatabaseError, InnkeeperError

from .aliasing import Resolver

if TYPE_CHECKING:
    from db.pool import Database

    from .store import SharedCacheLike

__all__ = ("AliasCache", "ALIAS_NAMESPACE")

_log = logging.getLogger(__name__)

ALIAS_NAMESPACE = "aliases"


def _key(scope: db_aliases.Scope, scope_id: int) -> str:
    return f"{'g' if scope == 'guild' else 'u'}{scope_id}"


class AliasCache:
    """Alias tables per guild and per user (see the module docstring).

    Parameters
    ----------
    db:
        Where aliases are stored.
    shared:
        The shared cache, or ``None`` to cache in this process only.
    ttl:
        Seconds a table lives (in Redis, or locally without a shared cache).
    max_entries:
        Tables kept locally before the oldest half is dropped.
    clock:
        Monotonic seconds (tests inject one).
    """

    __slots__ = ("db", "shared", "ttl", "max_entries", "_local", "_clock", "_shared_up")

    def __init__(self, db: Database, *, shared: SharedCacheLike | None = None, ttl: float = 300.0,
                 max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.shared = shared
        self.ttl = ttl
        self.max_entries = max_entries
        self._local: dict[str, tuple[float, dict[str, str]]] = {}
        self._clock = clock
        self._shared_up = False

    def _use_shared(self) -> bool:
        if not self._shared_up and self.shared is not None and self.shared.connected:
            self._shared_up = True
            self._local.clear()  # what was cached alone heard no invalidations
        return self._shared_up

    async def resolve(self, guild_id: int | None, user_id: int, name: str) -> str | None:
        """What ``name`` (lower case) runs for ``user_id`` in ``guild_id``, or ``None`` when it is no alias.

        Raises
        ------
        DatabaseError
            When the table is not cached and the database cannot be read.
        """
        found = (await self._table("user", user_id)).get(name)
        if found is None and guild_id is not None:
            found = (await self._table("guild", guild_id)).get(name)
        return found

    def resolver(self, guild_id: int | None, user_id: int) -> Resolver:
        """A :data:`~shard.pipeline.aliasing.Resolver` for one user in one guild."""
        async def resolve(name: str) -> str | None:
            return await self.resolve(guild_id, user_id, name)
        return resolve

    async def _table(self, scope: db_aliases.Scope, scope_id: int) -> dict[str, str]:
        key = _key(scope, scope_id)

        async def load() -> dict[str, str]:
            return {a.name: a.command for a in await db_aliases.list_aliases(self.db, scope, scope_id)}

        if self.shared is not None and self._use_shared():
            try:
                raw: Any = await self.shared.get_or_load(ALIAS_NAMESPACE, key, load, ttl=self.ttl)
            except DatabaseError:
                raise
            except InnkeeperError as exc:  # the cache itself failed: read the database directly
                _log.warning("shared cache failed for aliases %s (%s); reading the database", key, exc)
                return await load()
            return raw if isinstance(raw, dict) else {}
        entry = self._local.get(key)
        now = self._clock()
        if entry is not None and entry[0] > now:
            return entry[1]
        table = await load()
        if len(self._local) >= self.max_entries:
            for old in sorted(self._local, key=lambda k: self._local[k][0])[: self.max_entries // 2]:
                del self._local[old]
        self._local[key] = (now + self.ttl, table)
        return table

    async def invalidate(self, scope: db_aliases.Scope, scope_id: int) -> None:
        """Forget a scope's table everywhere after its aliases changed."""
        key = _key(scope, scope_id)
        self._local.pop(key, None)
        if self.shared is not None and self._use_shared():
            try:
                await self.shared.delete(ALIAS_NAMESPACE, key)
            except InnkeeperError as exc:
                _log.warning("shared cache invalidation of aliases %s failed: %s", key, exc)
