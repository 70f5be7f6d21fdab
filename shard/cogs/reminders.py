"""``/remind`` and ``/reminders list|cancel``: reminders delivered exactly once across clusters.

Storing is all this cog does; :mod:`shard.reminder_service` delivers (claim with ``FOR UPDATE SKIP
LOCKED``, send, mark). A reminder set in a server channel is posted there, mentioning its owner; one
set in DMs comes by DM.

``/remind`` refuses a server channel where the bot cannot post (View Channel and Send Messages,
read from discord.py's cache): such a reminder could only earn Discord's 403s. Every reminder
command also tells its user, once, which of their reminders could not be delivered and why
(:func:`db.reminders.take_failures`); the text of those reminders is not repeated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from db import reminders as db_reminders
from innkeeper.errors import CommandError, ErrorCode
from shard.channel_access import bot_can_post
from shard.cogs.base import PipelineCog
from shard.pipeline import ThrottleRule, command, group, respond, subcommand
from shard.pipeline.durations import format_duration, parse_when
from shard.pipeline.validation import check_text, neutralise
from shard.pipeline.views import send_pages

if TYPE_CHECKING:
    from db.reminders import Undelivered
    from shard.bot import ClusterBot

__all__ = ("Reminders", "When", "setup", "undelivered_notice", "CANNOT_POST")

CANNOT_POST = ("I can't post in this channel (I need View Channel and Send Messages here), so I couldn't "
               "deliver a reminder set here. Set it in a channel where I can post, or in DMs with me.")
#: Why a reminder could not be delivered, as its owner reads it (``{where}``: the channel).
_WHY = {
    "forbidden": "I'm not allowed to post in {where}, and your DMs are closed to me",
    "gone": "{where} no longer exists, and your DMs are closed to me",
    "dm_closed": "your DMs are closed to me",
    "unreadable": "its text could no longer be read (its encryption key was retired)",
    "gave_up": "Discord kept failing, even after several tries",
}
_NOTICE_LINES = 5


def undelivered_notice(items: list[Undelivered]) -> str:
    """What a user reads about reminders that could not be delivered ("" for none): ids, due times and why."""
    if not items:
        return ""
    lines = []
    for item in items[:_NOTICE_LINES]:
        where = f"<#{item.channel_id}>" if item.channel_id is not None else "that channel"
        why = _WHY.get(item.failure, "it could not be delivered").format(where=where)
        lines.append(f"⚠️ I couldn't deliver reminder #{item.id} (due <t:{int(item.due_at.timestamp())}:R>): {why}.")
    if len(items) > _NOTICE_LINES:
        lines.append(f"…and {len(items) - _NOTICE_LINES} more reminders that I couldn't deliver.")
    if any(i.failure in ("forbidden", "gone", "dm_closed") for i in items):
        lines.append("To get reminders, set them where I can post, or allow DMs from this server's members.")
    return "\n".join(lines)


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
        if ctx.guild is not None and not self.can_post_here(ctx):
            raise CommandError(f"the bot cannot post in channel {ctx.channel.id}", code=ErrorCode.CHANNEL_UNWRITABLE,
                               user_message=CANNOT_POST)
        item = await db_reminders.create_reminder(
            self.db, self.deps.require_keys(), user_id=ctx.author.id, body=text, due_at=due,
            guild_id=ctx.guild.id if ctx.guild else None, channel_id=ctx.channel.id if ctx.guild else None)
        left = format_duration(due - datetime.now(UTC))
        answer = (f"Okay, I'll remind you <t:{int(due.timestamp())}:R> (in {left}). "
                  f"Reminder #{item.id}; `/reminders cancel id:{item.id}` cancels it.")
        await respond(ctx, _join(answer, await self.notice(ctx)), ephemeral=False)

    @staticmethod
    def can_post_here(ctx: commands.Context[Any]) -> bool:
        """Whether the bot may post where ``ctx`` was invoked: discord.py's cache, else the interaction's
        ``app_permissions``; True when neither can tell (delivery checks again)."""
        verdict = bot_can_post(ctx.channel)
        if verdict is None and ctx.interaction is not None:
            perms = ctx.interaction.app_permissions
            verdict = perms.view_channel and perms.send_messages
        return verdict is not False

    async def notice(self, ctx: commands.Context[Any]) -> str:
        """The user's undelivered reminders they were not told about yet (told now, so only once)."""
        return undelivered_notice(await db_reminders.take_failures(self.db, ctx.author.id))

    @group("reminders", description="Your pending reminders.", feature="reminders")
    async def reminders(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(reminders, "list", description="List your pending reminders.", feature="reminders",
                ephemeral=True, examples=("/reminders list",))
    async def list_(self, ctx: commands.Context[Any]) -> None:
        """Your pending reminders, soonest first."""
        items = await db_reminders.list_for_user(self.db, self.deps.require_keys(), ctx.author.id, limit=100)
        notice = await self.notice(ctx)
        if not items:
            await respond(ctx, _join("You have no pending reminders.", notice))
            return
        lines = [f"**#{r.id}** <t:{int(r.due_at.timestamp())}:R> {'(DM)' if r.guild_id is None else ''} "
                 f"{_excerpt(r.body)}" for r in items]
        pages = ["\n".join(lines[i:i + 10]) for i in range(0, len(lines), 10)]
        pages = [f"**Your reminders** ({len(items)})\n{p}" for p in pages]
        pages[0] = _join(pages[0], notice)
        await send_pages(ctx, pages)

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
        await respond(ctx, _join(f"Reminder #{id} is cancelled.", await self.notice(ctx)))


def _join(answer: str, notice: str) -> str:
    return f"{answer}\n\n{notice}" if notice else answer


def _excerpt(body: str | None) -> str:
    if body is None:
        return "*(this reminder's text can no longer be read; it will not be delivered)*"
    return neutralise(body.replace("\n", " "), limit=150)


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Reminders(bot))
