"""``/stats commands|daily``: command usage in this server, per command and per day.

Usage rows are written in batches every few seconds (``db.usage.UsageRecorder``); this cluster's
buffer is flushed before each query so the numbers include the last few seconds. Large results are
paginated with buttons.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from db import usage as db_usage
from innkeeper.errors import DatabaseError
from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, group, subcommand
from shard.pipeline.validation import neutralise
from shard.pipeline.views import send_pages

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Stats", "setup", "PAGE_SIZE")

_log = logging.getLogger(__name__)

PAGE_SIZE = 15


def _pages(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return [f"{title}\nNo commands were used in that period."]
    return [f"{title}\n" + "\n".join(lines[i:i + PAGE_SIZE]) for i in range(0, len(lines), PAGE_SIZE)]


class Stats(PipelineCog):
    """Usage analytics."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    async def _rows(self, ctx: commands.Context[Any], days: int, command: str | None) -> list[db_usage.DailyUsage]:
        try:
            await self.deps.usage.flush()
        except DatabaseError as exc:
            _log.warning("usage flush before /stats failed: %s", exc)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        return await db_usage.usage_by_day(self.db, self.guild_id(ctx), since=since, command=command)

    @group("stats", description="How this server uses the bot's commands.", feature="stats", guild_only=True)
    async def stats(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(stats, "commands", description="Uses per command in this server.", feature="stats",
                level=Level.MOD, guild_only=True, ephemeral=True, defer=True,
                throttle=ThrottleRule(5, 60.0, "user"), examples=("/stats commands", "/stats commands days:30"))
    async def by_command(self, ctx: commands.Context[Any], days: commands.Range[int, 1, 365] = 7) -> None:
        """Uses and failures per command.

        Parameters
        ----------
        days:
            How many days back (1-365).
        """
        totals: dict[str, list[int]] = {}
        for row in await self._rows(ctx, days, None):
            acc = totals.setdefault(row.command, [0, 0])
            acc[0] += row.uses
            acc[1] += row.failures
        ordered = sorted(totals.items(), key=lambda kv: (-kv[1][0], kv[0]))
        lines = [f"`/{neutralise(name, limit=60)}` {uses} use(s)" + (f", {fails} failed" if fails else "")
                 for name, (uses, fails) in ordered]
        total = sum(v[0] for v in totals.values())
        await send_pages(ctx, _pages(f"**Commands in the last {days} day(s)**: {total} uses", lines))

    @subcommand(stats, "daily", description="Uses per day in this server, of all commands or one.",
                feature="stats", level=Level.MOD, guild_only=True, ephemeral=True, defer=True,
                throttle=ThrottleRule(5, 60.0, "user"),
                examples=("/stats daily", "/stats daily days:30 command:remind"))
    async def daily(self, ctx: commands.Context[Any], days: commands.Range[int, 1, 365] = 14, *,
                    command: commands.Range[str, 1, 60] | None = None) -> None:
        """Uses per UTC day.

        Parameters
        ----------
        days:
            How many days back (1-365).
        command:
            Only this command, e.g. remind or settings set.
        """
        name = " ".join(command.lower().lstrip("/").split()) if command else None
        per_day: dict[dt.date, list[int]] = {}
        for row in await self._rows(ctx, days, name):
            acc = per_day.setdefault(row.day, [0, 0])
            acc[0] += row.uses
            acc[1] += row.failures
        lines = [f"{day.isoformat()}: {uses} use(s)" + (f", {fails} failed" if fails else "")
                 for day, (uses, fails) in sorted(per_day.items(), reverse=True)]
        what = f"/{neutralise(name, limit=60)}" if name else "all commands"
        await send_pages(ctx, _pages(f"**{what}, last {days} day(s), per day (UTC)**", lines))


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Stats(bot))
