"""``/remind`` and ``/reminders list|cancel``: reminders delivered exactly once across clusters.

Storing is all this cog does; :mod:`shard.reminder_service` delivers (claim with ``FOR UPDATE SKIP
LOCKED``, send, mark). A reminder set in a server channel is posted there, mentioning its owner; one
set in DMs comes by DM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from db import reminders as db_reminders
from innkeeper.errors import CommandError, ErrorCode
from shard.cogs.base import PipelineCog
from shard.pipeline import ThrottleRule, command, group, respond, subcommand
from shard.pipeline.durations import format_duration, parse_when
from shard.pipeline.validation import check_text, neutralise
from shard.pipeline.views import send_pages

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Reminders", "When", "setup")


class When(commands.Converter[datetime]):
    """A duration from now (``10m``, ``2h30m``) or a UTC time (``14:30``, ``2030-01-31 09:00``)."""

    label = "duration or time"

    async def convert(self, ctx: commands.Context[Any], argument: str) -> datetime:
        check_text("when", argument, max_len=64)
        try:
            return parse_when(argument, datetime.now(UTC))
        except ValueError as exc:
            raise commands.BadArgument(str(exc)) from None


class Reminders(PipelineCog):
    """Personal reminders."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    @command("remind", description="Remind you of something later, here (or by DM).", feature="reminders",
             throttle=ThrottleRule(5, 60.0, "user"),
             examples=("/remind when:10m text:Stretch your legs", "/remind when:2h30m text:Call Sam",
                       "/remind when:09:00 text:Stand-up"))
    async def remind(self, ctx: commands.Context[Any], when: When, *, text: commands.Range[str, 1, 1500]) -> None:
        """Set a reminder.

        Parameters
        ----------
        when:
            A duration like 10m, 2h30m or 1d, or a UTC time like 14:30 or 2030-01-31 09:00.
        text:
            What to remind you of.
        """
        due: datetime = when  # type: ignore[assignment]  # the converter's result
        item = await db_reminders.create_reminder(
            self.db, self.deps.require_keys(), user_id=ctx.author.id, body=text, due_at=due,
            guild_id=ctx.guild.id if ctx.guild else None, channel_id=ctx.channel.id if ctx.guild else None)
        left = format_duration(due - datetime.now(UTC))
        await respond(ctx, f"Okay, I'll remind you <t:{int(due.timestamp())}:R> (in {left}). "
                           f"Reminder #{item.id}; `/reminders cancel id:{item.id}` cancels it.", ephemeral=False)

    @group("reminders", description="Your pending reminders.", feature="reminders")
    async def reminders(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(reminders, "list", description="List your pending reminders.", feature="reminders",
                ephemeral=True, examples=("/reminders list",))
    async def list_(self, ctx: commands.Context[Any]) -> None:
        """Your pending reminders, soonest first."""
        items = await db_reminders.list_for_user(self.db, self.deps.require_keys(), ctx.author.id, limit=100)
        if not items:
            await respond(ctx, "You have no pending reminders.")
            return
        lines = [f"**#{r.id}** <t:{int(r.due_at.timestamp())}:R> {'(DM)' if r.guild_id is None else ''} "
                 f"{neutralise(r.body.replace(chr(10), ' '), limit=150)}" for r in items]
        pages = ["\n".join(lines[i:i + 10]) for i in range(0, len(lines), 10)]
        await send_pages(ctx, [f"**Your reminders** ({len(items)})\n{p}" for p in pages])

    @subcommand(reminders, "cancel", description="Cancel one of your reminders.", feature="reminders",
                ephemeral=True, examples=("/reminders cancel id:42",))
    async def cancel(self, ctx: commands.Context[Any], id: commands.Range[int, 1, 2**53]) -> None:
        """Cancel a reminder.

        Parameters
        ----------
        id:
            The reminder's number (see /reminders list).
        """
        if not await db_reminders.cancel_reminder(self.db, ctx.author.id, id):
            raise CommandError(f"You have no pending reminder #{id}.", code=ErrorCode.NOT_FOUND)
        await respond(ctx, f"Reminder #{id} is cancelled.")


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Reminders(bot))
