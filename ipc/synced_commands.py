"""The hash of the application commands last synced to Discord, kept in Redis.

Discord limits how many application commands a bot may create a day, so cluster 0 syncs its
command tree only when the tree's payload changed since the last successful sync
(:mod:`shard.command_sync`). This store remembers that payload's hash under
:meth:`~ipc.keys.Keys.commands_synced`, without a TTL: the commands on Discord do not expire either.
Deleting the key makes the next start sync again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = ("SyncedCommands",)


class SyncedCommands:
    """Read and write the synced command payload's hash.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    keys:
        Key names.
    """

    __slots__ = ("redis", "keys")

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def load(self) -> str | None:
        """The hash stored after the last successful sync, or None if there was none.

        Raises
        ------
        redis.exceptions.RedisError
            Redis is unreachable (or its breaker open).
        """
        raw = await self.redis.get(self.keys.commands_synced())
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def save(self, digest: str) -> None:
        """Remember ``digest`` as the payload now on Discord.

        Raises
        ------
        redis.exceptions.RedisError
            Redis is unreachable (or its breaker open).
        """
        await self.redis.set(self.keys.commands_synced(), digest)

    async def forget(self) -> None:
        """Forget the synced hash: the next start syncs whatever its tree is."""
        await self.redis.delete(self.keys.commands_synced())
