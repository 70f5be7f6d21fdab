"""Gateway sessions per shard in Redis: what a restarted process needs to RESUME instead of IDENTIFY.

A RESUME needs the ``session_id``, the last sequence number and the ``resume_gateway_url`` READY
gave. discord.py keeps them only in memory (``ws.session_id``, ``ws.sequence``, ``ws.gateway``);
:class:`SessionStore` keeps them in one hash per shard, with a TTL, because Discord only lets a
session resume for a short while after it dropped. A session saved under another shard count is
never handed back: resuming it would route guilds to the wrong shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = ("SessionInfo", "SessionStore")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One shard's resumable gateway session."""

    shard_id: int
    shard_count: int
    session_id: str
    sequence: int | None
    resume_gateway_url: str
    #: Unix time of the save.
    saved_at: float = 0.0


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class SessionStore:
    """Save, load and forget shard sessions.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    keys:
        Key names.
    ttl_s:
        How long a saved session stays loadable; past it Discord would refuse the RESUME anyway.
    """

    __slots__ = ("redis", "keys", "ttl_s")

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, ttl_s: float = 120.0) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def save(self, info: SessionInfo) -> None:
        await self.save_many((info,))

    async def save_many(self, infos: Iterable[SessionInfo]) -> None:
        """Save sessions in one round trip; each expires ``ttl_s`` after this save."""
        ttl_ms = max(1, round(self.ttl_s * 1000))
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            count = 0
            for info in infos:
                key = self.keys.session(info.shard_id)
                mapping: dict[Any, Any] = {
                    "shard_count": info.shard_count, "session_id": info.session_id,
                    "sequence": "" if info.sequence is None else info.sequence,
                    "resume_gateway_url": info.resume_gateway_url, "saved_at": info.saved_at or now,
                }
                pipe.hset(key, mapping=mapping)
                pipe.pexpire(key, ttl_ms)
                count += 1
            if count:
                await pipe.execute()

    async def load(self, shard_id: int, shard_count: int) -> SessionInfo | None:
        """The saved session of ``shard_id`` under ``shard_count``; None when there is none usable."""
        return (await self.load_many((shard_id,), shard_count)).get(shard_id)

    async def load_many(self, shard_ids: Iterable[int], shard_count: int) -> dict[int, SessionInfo]:
        ids = list(shard_ids)
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(self.keys.session(sid))
            rows = await pipe.execute()
        out: dict[int, SessionInfo] = {}
        for sid, raw in zip(ids, rows, strict=True):
            if not raw:
                continue
            row = {_text(k): _text(v) for k, v in raw.items()}
            try:
                info = SessionInfo(
                    shard_id=sid, shard_count=int(row["shard_count"] or 0), session_id=row["session_id"] or "",
                    sequence=int(row["sequence"] or "") if row.get("sequence") else None,
                    resume_gateway_url=row["resume_gateway_url"] or "", saved_at=float(row.get("saved_at") or 0),
                )
            except (KeyError, ValueError):
                _log.warning("ignoring a malformed saved session for shard %d: %r", sid, row)
                continue
            if info.shard_count != shard_count:
                _log.info("saved session of shard %d is for %d shards, not %d: not resumable",
                          sid, info.shard_count, shard_count)
                continue
            if not info.session_id or not info.resume_gateway_url:
                continue
            out[sid] = info
        return out

    async def forget(self, shard_ids: Iterable[int]) -> None:
        """Delete saved sessions (after an INVALID_SESSION, or a deliberate full restart)."""
        names = [self.keys.session(s) for s in shard_ids]
        if names:
            await self.redis.delete(*names)
