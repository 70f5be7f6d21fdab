"""Version-checked writes for the shared cache: a generation per key, compared when a load is stored.

The race it closes: a loader reads the database, a writer then changes the row and invalidates the
cache entry (``DEL``), and only then does the loader store what it read. With a plain ``SET NX``
that stale copy would be stored after the invalidation and served for the whole TTL; for guild
configuration that is a revoked level surviving for minutes.

So every invalidation (and every explicit write) increments the key's **generation**
(``keys.cache_generation``) in the same ``MULTI`` as the ``DEL``. A loader reads the generation
*before* it reads the database, and stores with :data:`STORE`, which writes only while the
generation is still the one it read. A write that happened between the loader's read and its store
has moved the generation on, so the stale value is refused: the loader's caller gets what it read
(its request overlapped the write), nobody else ever sees it.

A generation key lives ``generation_ttl`` seconds after its last increment (a day by default),
far longer than any load; a generation that expired reads as ``""``, which a loader that read a
number before cannot match.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from innkeeper.errors import UsageError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from .keys import Keys

__all__ = ("Stored", "Generations", "STORE")

#: KEYS[1] the value, KEYS[2] its generation; ARGV[1] the generation read before loading ("" for none),
#: ARGV[2] the packed value, ARGV[3] its TTL in ms. Returns {0} stale, {1} stored, {2, value} taken.
STORE = """
local generation = redis.call('GET', KEYS[2]) or ''
if generation ~= ARGV[1] then
  return {0, false}
end
if redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3], 'NX') then
  return {1, false}
end
return {2, redis.call('GET', KEYS[1])}
"""


class Stored(enum.Enum):
    """What :meth:`Generations.store` did with a loaded value."""

    #: The key was invalidated (or written) after the loader read its generation: nothing stored.
    STALE = 0
    #: Stored.
    STORED = 1
    #: Another process stored a value first (under the same generation): use that one.
    TAKEN = 2


class Generations:
    """The generation counters of the cache's keys.

    Parameters
    ----------
    redis, keys:
        The client and the key names.
    ttl:
        Seconds a generation key lives after its last increment.
    """

    __slots__ = ("keys", "ttl_ms", "_store")

    def __init__(self, redis: Redis, keys: Keys, *, ttl: float = 86_400.0) -> None:
        if ttl <= 0:
            raise UsageError("the cache generation TTL must be positive")
        self.keys = keys
        self.ttl_ms = max(1, int(ttl * 1000))
        self._store: AsyncScript = redis.register_script(STORE)

    def read(self, pipe: Any, ns: str, k: str) -> None:
        """Queue a read of the key's generation on ``pipe`` (its reply: bytes, or None when unset)."""
        pipe.get(self.keys.cache_generation(ns, k))

    def bump(self, pipe: Any, ns: str, keys: Iterable[str]) -> None:
        """Queue, on ``pipe``, the increment of each key's generation (before the ``DEL`` it guards)."""
        for k in keys:
            name = self.keys.cache_generation(ns, k)
            pipe.incr(name)
            pipe.pexpire(name, self.ttl_ms)

    async def queue_store(self, pipe: Any, ns: str, k: str, data: bytes, ttl_ms: int, seen: bytes | None) -> None:
        """Queue :meth:`store` on ``pipe`` (no I/O); its reply is ``[status, theirs]`` (see :meth:`reply`)."""
        await self._store(keys=[self.keys.cache(ns, k), self.keys.cache_generation(ns, k)],
                    args=[b"" if seen is None else seen, data, ttl_ms], client=pipe)

    @staticmethod
    def reply(raw: Any) -> tuple[Stored, bytes | None]:
        """A queued store's reply as ``(what happened, the value another process stored)``."""
        status, theirs = raw
        return Stored(int(status)), theirs

    async def store(self, ns: str, k: str, data: bytes, ttl_ms: int, seen: bytes | None) -> tuple[Stored, bytes | None]:
        """Store ``data`` unless the generation moved on from ``seen``; returns what happened.

        With :attr:`Stored.TAKEN` the second item is the value another process stored.
        """
        status, theirs = await self._store(keys=[self.keys.cache(ns, k), self.keys.cache_generation(ns, k)],
                                           args=[b"" if seen is None else seen, data, ttl_ms])
        return Stored(int(status)), theirs
