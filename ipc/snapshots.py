"""Compact guild snapshots in Redis, indexed per shard, for rehydrating a restarted cluster.

A snapshot is a map shaped like Discord's guild JSON (ids as strings, channel and role objects
as in ``GUILD_CREATE``) plus ``shard_id``, so the resume work can hand it to discord.py's parsers
(``shard/snapshots.py`` builds them from discord.py's cache). The store keeps each under
``keys.guild_snapshot(id)`` with a TTL and lists the guild ids of each shard in
``keys.shard_snapshot_index(shard)``; saves are pipelined, loads fetch a whole shard in a few
``MGET`` round trips and prune index entries whose snapshot expired or moved to another shard.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import RedisError

from innkeeper.errors import ErrorCode, IPCError, UsageError

from .messages import is_plain

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .keys import Keys

__all__ = ("GuildSnapshotStore",)

_log = logging.getLogger(__name__)

_CHUNK = 500


def _guild_id(snapshot: Mapping[str, Any]) -> int:
    raw = snapshot.get("id")
    try:
        gid = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"a guild snapshot needs a numeric 'id', got {raw!r}") from None
    if gid <= 0 or isinstance(raw, bool):
        raise UsageError(f"a guild snapshot needs a positive 'id', got {raw!r}")
    return gid


def _shard_id(snapshot: Mapping[str, Any]) -> int:
    raw = snapshot.get("shard_id")
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise UsageError(f"a guild snapshot needs a 'shard_id' (non-negative integer), got {raw!r}")
    return raw


class GuildSnapshotStore:
    """Save and load guild snapshots, per shard.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client with ``decode_responses=False``.
    keys:
        Key names (:class:`~ipc.keys.Keys`).
    ttl:
        Seconds a snapshot lives; re-saving refreshes it. Long enough to span a restart.
    """

    __slots__ = ("redis", "keys", "ttl")

    def __init__(self, redis: Redis, keys: Keys, *, ttl: float = 3600.0) -> None:
        if ttl <= 0:
            raise UsageError("snapshot ttl must be positive")
        self.redis = redis
        self.keys = keys
        self.ttl = ttl

    async def save(self, snapshot: Mapping[str, Any]) -> None:
        """Save one snapshot (see :meth:`save_many`)."""
        await self.save_many([snapshot])

    async def save_many(self, snapshots: Iterable[Mapping[str, Any]]) -> int:
        """Save snapshots in one pipeline and index them by shard; returns how many.

        Raises
        ------
        UsageError
            A snapshot lacks ``id`` or ``shard_id``, or holds values that are not plain data.
        IPCError
            ``REDIS_UNAVAILABLE``.
        """
        ttl_ms = max(1, int(self.ttl * 1000))
        pipe = self.redis.pipeline(transaction=False)
        shards: set[int] = set()
        count = 0
        for snapshot in snapshots:
            gid, shard = _guild_id(snapshot), _shard_id(snapshot)
            if not is_plain(dict(snapshot)):
                raise UsageError(f"guild snapshot {gid} holds values that are not plain data")
            pipe.set(self.keys.guild_snapshot(gid), msgpack.packb(dict(snapshot), use_bin_type=True), px=ttl_ms)
            pipe.sadd(self.keys.shard_snapshot_index(shard), gid)
            shards.add(shard)
            count += 1
        for shard in shards:
            pipe.pexpire(self.keys.shard_snapshot_index(shard), ttl_ms)
        if count:
            await self._execute(pipe)
        return count

    async def load(self, guild_id: int) -> dict[str, Any] | None:
        """One guild's snapshot, or None."""
        try:
            raw = await self.redis.get(self.keys.guild_snapshot(guild_id))
        except (RedisError, OSError) as exc:
            raise IPCError(f"snapshots: Redis is unreachable ({exc})", code=ErrorCode.REDIS_UNAVAILABLE) from exc
        return None if raw is None else self._decode(guild_id, raw)

    async def load_shard(self, shard_id: int) -> list[dict[str, Any]]:
        """Every live snapshot of ``shard_id``, ordered by guild id.

        Index entries whose snapshot expired, is corrupt or now belongs to another shard are removed.
        """
        index = self.keys.shard_snapshot_index(shard_id)
        try:
            members = sorted(int(m) for m in await self.redis.smembers(index))
            out: list[dict[str, Any]] = []
            stale: list[int] = []
            for start in range(0, len(members), _CHUNK):
                chunk = members[start:start + _CHUNK]
                raws = await self.redis.mget([self.keys.guild_snapshot(g) for g in chunk])
                for gid, raw in zip(chunk, raws, strict=True):
                    snap = None if raw is None else self._decode(gid, raw)
                    if snap is None or snap.get("shard_id") != shard_id:
                        stale.append(gid)
                    else:
                        out.append(snap)
            if stale:
                await self.redis.srem(index, *stale)
        except (RedisError, OSError) as exc:
            raise IPCError(f"snapshots: Redis is unreachable ({exc})", code=ErrorCode.REDIS_UNAVAILABLE) from exc
        return out

    async def delete(self, guild_id: int, shard_id: int) -> None:
        """Forget a guild (it left, or was deleted)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.guild_snapshot(guild_id))
        pipe.srem(self.keys.shard_snapshot_index(shard_id), guild_id)
        await self._execute(pipe)

    async def _execute(self, pipe: Any) -> None:
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise IPCError(f"snapshots: Redis is unreachable ({exc})", code=ErrorCode.REDIS_UNAVAILABLE) from exc

    @staticmethod
    def _decode(guild_id: int, raw: bytes | str) -> dict[str, Any] | None:
        try:
            value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - a corrupt snapshot is skipped, never fatal
            _log.warning("snapshot of guild %s is corrupt; ignoring it", guild_id)
            return None
        return value if isinstance(value, dict) else None
