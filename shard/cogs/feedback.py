"""``/feedback submit|list|ack|resolve``: users send feedback, moderators work through it.

Slash users without text get a modal; prefix users write the text after the command. The text is
stored encrypted (``db.feedback``). When a moderator resolves or rejects feedback, the submitter
gets a DM with the outcome and the note.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord.ext import commands

from db import feedback as db_feedback
from innkeeper.errors import CommandError, ErrorCode
from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, group, respond, subcommand
from shard.pipeline.validation import NO_MENTIONS, check_text, clip, neutralise
from shard.pipeline.views import component_error, send_pages

if TYPE_CHECKING:
    from db.feedback import Feedback
    from shard.bot import ClusterBot

__all__ = ("FeedbackCog", "FeedbackModal", "setup", "MAX_FEEDBACK")

_log = logging.getLogger(__name__)

MAX_FEEDBACK = 2000
ListStatus = Literal["open", "acknowledged", "resolved", "rejected", "all"]


class FeedbackModal(discord.ui.Modal, title="Send feedback"):
    """The modal a slash user fills in when they gave no text."""

    text: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Your feedback", style=discord.TextStyle.paragraph, min_length=1, max_length=MAX_FEEDBACK)

    def __init__(self, cog: FeedbackCog) -> None:
        super().__init__(timeout=600)
        self.cog = cog

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        body = check_text("feedback", str(self.text.value), min_len=1, max_len=MAX_FEEDBACK)
        item = await self.cog.store(interaction.user.id, interaction.guild_id, interaction.channel_id, body)
        await interaction.response.send_message(f"Thanks! Your feedback is #{item.id}.", ephemeral=True)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /, *_: Any) -> None:
        await component_error(interaction, error)


def _line(item: Feedback) -> str:
    who = f"<@{item.author_id}>" if item.author_id else "(erased user)"
    return f"**#{item.id}** [{item.status}] {who} <t:{int(item.created_at.timestamp())}:R>: " \
           f"{neutralise(item.body.replace(chr(10), ' '), limit=200)}"


class FeedbackCog(PipelineCog):
    """Feedback from users to the server's moderators."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    async def store(self, author_id: int, guild_id: int | None, channel_id: int | None, body: str) -> Feedback:
        item = await db_feedback.submit_feedback(self.db, self.deps.require_keys(), author_id=author_id,
                                                 body=body, guild_id=guild_id, channel_id=channel_id)
        await self._tell_log_channel(item)
        return item

    async def _tell_log_channel(self, item: Feedback) -> None:
        if item.guild_id is None:
            return
        try:
            cfg = await self.deps.guild_config.get(item.guild_id)
            if cfg.log_channel_id:
                channel = self.bot.get_partial_messageable(cfg.log_channel_id, guild_id=item.guild_id)
                await channel.send(f"New feedback {_line(item)}\nSee `/feedback list`.", allowed_mentions=NO_MENTIONS)
        except (discord.HTTPException, CommandError) as exc:
            _log.info("could not post feedback #%s to the log channel: %s", item.id, exc)

    @group("feedback", description="Send feedback to this server's moderators, or work through it.",
           feature="feedback")
    async def feedback(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(feedback, "submit", description="Send feedback (without text, a form opens).", feature="feedback",
                throttle=ThrottleRule(3, 300.0, "user"), ephemeral=True,
                examples=("/feedback submit text:The reminders are great", "/feedback submit"))
    async def submit(self, ctx: commands.Context[Any], *, text: commands.Range[str, 1, 2000] | None = None) -> None:
        """Send feedback.

        Parameters
        ----------
        text:
            What you want to tell the moderators (leave it out to get a form).
        """
        self.deps.require_keys()
        if text is None:
            if ctx.interaction is None:
                raise CommandError("Write your feedback after the command, e.g. `!feedback submit I like it`.",
                                   code=ErrorCode.COMMAND_BAD_ARGUMENT)
            await ctx.interaction.response.send_modal(FeedbackModal(self))
            return
        item = await self.store(ctx.author.id, ctx.guild.id if ctx.guild else None,
                                ctx.channel.id if ctx.channel else None, text)
        await respond(ctx, f"Thanks! Your feedback is #{item.id}.")

    @subcommand(feedback, "list", description="List this server's feedback (moderators).", feature="feedback",
                level=Level.MOD, guild_only=True, ephemeral=True,
                examples=("/feedback list", "/feedback list status:all"))
    async def list_(self, ctx: commands.Context[Any], status: ListStatus = "open") -> None:
        """List feedback, newest first, ten per page.

        Parameters
        ----------
        status:
            open (open and acknowledged), acknowledged, resolved, rejected or all.
        """
        statuses: tuple[db_feedback.Status, ...] | None
        if status == "all":
            statuses = None
        elif status == "open":
            statuses = ("open", "acknowledged")
        else:
            statuses = (status,)
        items = await db_feedback.list_feedback(self.db, self.deps.require_keys(), guild_id=self.guild_id(ctx),
                                                statuses=statuses, limit=100)
        if not items:
            await respond(ctx, "No feedback here with that status.")
            return
        lines = [_line(i) for i in items]
        pages = ["\n".join(lines[i:i + 10]) for i in range(0, len(lines), 10)]
        await send_pages(ctx, [f"**Feedback ({status})**\n{p}" for p in pages])

    @subcommand(feedback, "ack", description="Mark feedback as seen (moderators).", feature="feedback",
                level=Level.MOD, guild_only=True, audit=True, examples=("/feedback ack id:12",))
    async def ack(self, ctx: commands.Context[Any], id: commands.Range[int, 1, 2**53]) -> None:
        """Acknowledge feedback.

        Parameters
        ----------
        id:
            The feedback number.
        """
        await self._own(ctx, id)
        await db_feedback.acknowledge(self.db, self.deps.require_keys(), id, by=ctx.author.id)
        await respond(ctx, f"Feedback #{id} is acknowledged.", ephemeral=False)

    @subcommand(feedback, "resolve", description="Resolve or reject feedback; the sender gets a DM (moderators).",
                feature="feedback", level=Level.MOD, guild_only=True, audit=True,
                examples=("/feedback resolve id:12 outcome:resolved note:Fixed in today's update",
                          "/feedback resolve id:13 outcome:rejected note:Works as intended"))
    async def resolve(self, ctx: commands.Context[Any], id: commands.Range[int, 1, 2**53],
                      outcome: Literal["resolved", "rejected"] = "resolved", *,
                      note: commands.Range[str, 1, 1000] | None = None) -> None:
        """Close feedback.

        Parameters
        ----------
        id:
            The feedback number.
        outcome:
            resolved or rejected.
        note:
            A note for the sender.
        """
        await self._own(ctx, id)
        item = await db_feedback.close(self.db, self.deps.require_keys(), id, outcome, by=ctx.author.id,
                                       resolution=note)
        told = await self._notify(item, ctx.guild)
        extra = "" if told else " (I couldn't DM the sender.)"
        await respond(ctx, f"Feedback #{id} is {outcome}.{extra}", ephemeral=False)

    async def _own(self, ctx: commands.Context[Any], feedback_id: int) -> None:
        item = await db_feedback.get_feedback(self.db, self.deps.require_keys(), feedback_id)
        if item is None or item.guild_id != self.guild_id(ctx):
            raise CommandError(f"There is no feedback #{feedback_id} in this server.", code=ErrorCode.NOT_FOUND)

    async def _notify(self, item: Feedback, guild: discord.Guild | None) -> bool:
        if item.author_id is None:
            return False
        where = f" in {neutralise(guild.name, limit=100)}" if guild is not None else ""
        note = f"\nNote: {neutralise(item.resolution, limit=1000)}" if item.resolution else ""
        text = (f"Your feedback #{item.id}{where} was {item.status}.{note}\n"
                f"> {clip(neutralise(item.body.replace(chr(10), ' ')), 300)}")
        try:
            dm = await self.bot.create_dm(discord.Object(item.author_id))
            await dm.send(text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            _log.info("could not DM the sender of feedback #%s: %s", item.id, exc)
            return False
        return True


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(FeedbackCog(bot))
