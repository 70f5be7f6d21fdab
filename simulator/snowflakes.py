"""Snowflake arithmetic: ids from Discord-epoch milliseconds, shard routing, and snowflake times as ISO 8601."""

from __future__ import annotations

import datetime

__all__ = ("DISCORD_EPOCH_MS", "snowflake", "shard_for", "iso")

DISCORD_EPOCH_MS = 1_420_070_400_000


def snowflake(ms: int, worker: int = 0, increment: int = 0) -> int:
    """A snowflake from milliseconds after the Discord epoch, worker bits and an increment."""
    return (ms << 22) | ((worker & 0x1F) << 17) | (increment & 0xFFF)


def shard_for(guild_id: int, num_shards: int) -> int:
    """The shard that receives a guild's events: ``(guild_id >> 22) % num_shards``."""
    return (guild_id >> 22) % num_shards


def iso(ms: int) -> str:
    """ISO 8601 timestamp (as Discord formats them) of ``ms`` after the Discord epoch."""
    when = datetime.datetime.fromtimestamp((ms + DISCORD_EPOCH_MS) / 1000, tz=datetime.UTC)
    return when.isoformat()
