"""The bot's command groups (cogs). Each module is an extension loaded by :class:`shard.bot.ClusterBot`."""

from __future__ import annotations

__all__ = ("EXTENSIONS",)

#: Extensions every cluster loads, in order.
EXTENSIONS: tuple[str, ...] = (
    "shard.cogs.core",
    "shard.cogs.settings",
    "shard.cogs.permissions",
    "shard.cogs.aliases",
    "shard.cogs.feedback",
    "shard.cogs.reminders",
    "shard.cogs.privacy",
    "shard.cogs.audit",
    "shard.cogs.stats",
)
