"""Per-guild prefixes and alias expansion: the two hooks on discord.py's message handling.

:class:`PrefixResolver` is the bot's ``command_prefix`` callable: the guild's prefix from the
cached guild configuration (``/settings set prefix``), the default prefix in DMs or while the
database is unreachable, and always the bot's mention. Since it is where discord.py's full path
loads a guild's configuration for a message, it also hands that configuration to whoever waits for
it (``on_config``: automod, for the messages :class:`~shard.lean_messages.LeanMessages` could not
judge without it). :class:`AliasExpander` is what
``ClusterBot.get_context`` calls for messages: it expands aliases (:mod:`shard.pipeline.aliasing`),
looking them up in the :class:`~shard.pipeline.alias_cache.AliasCache`, so an unknown word after the
prefix costs no query once its user's and guild's tables are cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from innkeeper.errors import DatabaseError

from .aliasing import expand_context

if TYPE_CHECKING:
    from .alias_cache import AliasCache
    from .config import GuildConfig, GuildConfigSource

__all__ = ("PrefixResolver", "AliasExpander", "ConfigHook")

#: Called with a guild message's guild id and that guild's configuration (None when it could not be read).
ConfigHook = Callable[[int, "GuildConfig | None"], None]

_log = logging.getLogger(__name__)


class PrefixResolver:
    """The prefixes that invoke commands for a message (the bot's ``command_prefix``).

    Parameters
    ----------
    default_prefix:
        ``INNKEEPER_DEFAULT_PREFIX``.
    config:
        The cached guild configuration.
    on_config:
        Called with each guild message's guild id and the configuration read for it (never raises).
    """

    __slots__ = ("default_prefix", "config", "on_config")

    def __init__(self, default_prefix: str, config: GuildConfigSource, on_config: ConfigHook | None = None) -> None:
        self.default_prefix = default_prefix
        self.config = config
        self.on_config = on_config

    async def __call__(self, bot: commands.Bot, message: discord.Message) -> list[str]:
        prefix = self.default_prefix
        if message.guild is not None:
            cfg: GuildConfig | None = None
            try:
                cfg = await self.config.get(message.guild.id)
            except DatabaseError as exc:
                _log.debug("guild %s prefix unavailable (%s); using the default", message.guild.id, exc)
            else:
                prefix = cfg.prefix or prefix
            if self.on_config is not None:
                self.on_config(message.guild.id, cfg)
        return commands.when_mentioned_or(prefix)(bot, message)


class AliasExpander:
    """Expands an alias in a prefix context (no-op for commands, interactions, plain chat).

    Parameters
    ----------
    aliases:
        The cached alias tables.
    config:
        The cached guild configuration (a guild may turn aliases off).
    """

    __slots__ = ("aliases", "config")

    def __init__(self, aliases: AliasCache, config: GuildConfigSource) -> None:
        self.aliases = aliases
        self.config = config

    async def expand(self, ctx: commands.Context[Any]) -> commands.Context[Any]:
        if ctx.interaction is not None or ctx.command is not None or ctx.prefix is None or not ctx.invoked_with:
            return ctx
        resolver = self.aliases.resolver(ctx.guild.id if ctx.guild else None, ctx.author.id)
        try:
            if ctx.guild is not None and not (await self.config.get(ctx.guild.id)).feature_enabled("aliases"):
                return ctx
            return await expand_context(ctx, resolver)
        except DatabaseError as exc:
            _log.debug("alias lookup failed: %s", exc)
            return ctx
