"""A small base for the bot's cogs: their dependencies (``ClusterBot.deps``), and group help for prefix users."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from discord.ext import commands

from innkeeper.errors import CommandError, ErrorCode
from shard.pipeline.context import respond, state_of
from shard.pipeline.levels import Level
from shard.pipeline.spec import spec_of

if TYPE_CHECKING:
    from db.pool import Database
    from shard.bot import ClusterBot
    from shard.pipeline.deps import CommandDeps

__all__ = ("PipelineCog",)


class PipelineCog(commands.Cog):
    """Base class of every command group: typed access to the bot and to the commands' dependencies.

    The dependencies are read when a command runs, not when the cog loads, so the cogs also load
    into an offline bot (``python -m shard.docs`` describes them that way).
    """

    def __init__(self, bot: ClusterBot) -> None:
        self.bot = bot

    @property
    def deps(self) -> CommandDeps:
        return self.bot.deps

    @property
    def db(self) -> Database:
        return self.bot.deps.db

    @staticmethod
    def level(ctx: commands.Context[Any]) -> Level:
        """The caller's level as the permission stage resolved it."""
        level = state_of(ctx).level
        return level if level is not None else Level.EVERYONE

    @staticmethod
    def guild_id(ctx: commands.Context[Any]) -> int:
        if ctx.guild is None:
            raise CommandError("This command only works in a server.", code=ErrorCode.COMMAND_FORBIDDEN)
        return ctx.guild.id

    async def invalidate(self, ctx: commands.Context[Any]) -> None:
        """Drop the guild's cached configuration after a write (here and on every cluster)."""
        await self.deps.guild_config.invalidate(self.guild_id(ctx))

    async def group_help(self, ctx: commands.Context[Any]) -> None:
        """What a bare ``!group`` answers: the subcommands this user may run."""
        group = ctx.command
        if not isinstance(group, commands.Group):
            return
        lines = [f"`/{group.qualified_name}` has these subcommands:"]
        for sub in sorted(group.commands, key=lambda c: c.name):
            if spec_of(sub) is not None and await self.deps.pipeline.may_run(ctx, sub):
                usage = f"{sub.qualified_name} {sub.signature}".strip()
                lines.append(f"`{ctx.prefix or '/'}{usage}` - {sub.description or sub.short_doc}")
        if len(lines) == 1:
            lines.append("(none that you can use here)")
        await respond(ctx, "\n".join(lines))
