"""Core commands: ``/ping`` and ``!ping``."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from shard.hybrid import hybrid_command

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Core", "setup")

_log = logging.getLogger(__name__)


class Core(commands.Cog):
    """Liveness commands every bot needs."""

    def __init__(self, bot: ClusterBot) -> None:
        self.bot = bot

    @hybrid_command("ping", description="Check that the bot answers, and how fast.")
    async def ping(self, ctx: commands.Context[Any]) -> None:
        """Answer with the gateway latency of this guild's shard."""
        started = time.perf_counter()
        shard_id = ctx.guild.shard_id if ctx.guild is not None else 0
        shard = self.bot.get_shard(shard_id)
        latency = shard.latency if shard is not None else self.bot.latency
        latency_ms = "n/a" if latency != latency or latency == float("inf") else f"{latency * 1000:.0f} ms"
        await ctx.send(f"Pong! shard {shard_id}, cluster {self.bot.cluster_id}, gateway {latency_ms}")
        _log.debug("ping answered in %.1f ms", (time.perf_counter() - started) * 1000)


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Core(bot))
