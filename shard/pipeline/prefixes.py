"""Per-guild prefixes and alias expansion: the two hooks on discord.py's message handling.

:func:`guild_prefix` is the bot's ``command_prefix`` callable: the guild's prefix from the cached
guild configuration (``/settings set prefix``), the default prefix in DMs or while the database is
unreachable, and always the bot's mention. :func:`context_for` is what ``ClusterBot.get_context``
calls for messages: it expands aliases (:mod:`shard.pipeline.aliasing`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from db import aliases as db_aliases
from innkeeper.errors import DatabaseError

from .aliasing import Resolver, expand_context

if TYPE_CHECKING:
    from shard.bot import ClusterBot

    from .runtime import CommandRuntime

__all__ = ("guild_prefix", "context_for", "alias_resolver")

_log = logging.getLogger(__name__)


async def guild_prefix(bot: ClusterBot, message: discord.Message) -> list[str]:
    """The prefixes that invoke commands for ``message``."""
    prefix = bot.settings.default_prefix
    if message.guild is not None:
        try:
            cfg = await bot.command_runtime.guild_config.get(message.guild.id)
        except DatabaseError as exc:
            _log.debug("guild %s prefix unavailable (%s); using the default", message.guild.id, exc)
        else:
            prefix = cfg.prefix or prefix
    return commands.when_mentioned_or(prefix)(bot, message)


def alias_resolver(runtime: CommandRuntime, guild_id: int | None, user_id: int) -> Resolver:
    """What alias names mean for one user in one guild (their own first, then the guild's)."""
    async def resolve(name: str) -> str | None:
        found = await db_aliases.resolve_alias(runtime.db, guild_id, user_id, name)
        return found.command if found is not None else None
    return resolve


async def context_for(bot: ClusterBot, ctx: commands.Context[Any]) -> commands.Context[Any]:
    """Expand an alias in a prefix context (no-op for commands, interactions, plain chat)."""
    if ctx.interaction is not None or ctx.command is not None or ctx.prefix is None or not ctx.invoked_with:
        return ctx
    resolver = alias_resolver(bot.command_runtime, ctx.guild.id if ctx.guild else None, ctx.author.id)
    try:
        if ctx.guild is not None and not (await bot.command_runtime.guild_config.get(ctx.guild.id)
                                          ).feature_enabled("aliases"):
            return ctx
        return await expand_context(ctx, resolver)
    except DatabaseError as exc:
        _log.debug("alias lookup failed: %s", exc)
        return ctx
