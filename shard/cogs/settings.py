"""``/settings show`` and ``/settings set``: prefix, log channel, automod level and feature toggles.

The prefix set here drives prefix commands at once on every cluster: the write invalidates the
guild's cached configuration, which :class:`shard.pipeline.prefixes.PrefixResolver` reads.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord.ext import commands

from db import guilds as db_guilds
from innkeeper.errors import CommandError, ErrorCode
from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, group, respond, subcommand
from shard.pipeline.config import AUTOMOD_NAMES
from shard.pipeline.spec import TOGGLEABLE
from shard.pipeline.validation import neutralise

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Settings", "setup", "SettingKey", "parse_switch", "parse_prefix", "parse_automod")

SettingKey = Literal["prefix", "log_channel", "automod", "feature.aliases", "feature.feedback", "feature.reminders",
                     "feature.stats"]

_PREFIX_RE = re.compile(r"[^\s`@#<>*_~|\\]{1,16}")
_CHANNEL_RE = re.compile(r"^(?:<#)?(\d{15,21})>?$")
_ON = ("on", "yes", "true", "enable", "enabled", "1")
_OFF = ("off", "no", "false", "disable", "disabled", "0")


def _bad(message: str) -> CommandError:
    return CommandError(message, code=ErrorCode.COMMAND_BAD_ARGUMENT)


def parse_switch(value: str) -> bool | None:
    """``on``/``off`` (and friends) → True/False; ``reset`` → None (the default)."""
    v = value.strip().lower()
    if v in _ON:
        return True
    if v in _OFF:
        return False
    if v in ("reset", "default"):
        return None
    raise _bad("Use `on`, `off` or `reset`.")


def parse_prefix(value: str) -> str | None:
    """A prefix of 1-16 characters without spaces, mentions or markdown; ``reset`` → the default."""
    v = value.strip()
    if v.lower() in ("reset", "default"):
        return None
    if not _PREFIX_RE.fullmatch(v):
        raise _bad("A prefix is 1-16 characters, without spaces, `@`, `#`, `<`, `>` or markdown characters.")
    return v


def parse_automod(value: str) -> int:
    v = value.strip().lower()
    if v.isdigit() and int(v) < len(AUTOMOD_NAMES):
        return int(v)
    if v in AUTOMOD_NAMES:
        return AUTOMOD_NAMES.index(v)
    raise _bad(f"The automod level is one of: {', '.join(AUTOMOD_NAMES)}.")


class Settings(PipelineCog):
    """Guild settings."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    @group("settings", description="Show or change this server's bot settings.", feature="settings",
           guild_only=True)
    async def settings(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(settings, "show", description="Show this server's bot settings.", feature="settings",
                level=Level.MOD, guild_only=True, ephemeral=True, examples=("/settings show",),
                needs=())  # the last known settings answer while the database is down
    async def show(self, ctx: commands.Context[Any]) -> None:
        """Prefix, log channel, automod level and which features are on."""
        cfg = await self.deps.guild_config.get(self.guild_id(ctx))
        default = self.deps.settings.default_prefix
        prefix = f"`{cfg.prefix}`" if cfg.prefix else f"`{default}` (default)"
        log = f"<#{cfg.log_channel_id}>" if cfg.log_channel_id else "not set"
        features = ", ".join(f"{name} {'on' if cfg.feature_enabled(name) else 'off'}" for name in TOGGLEABLE)
        lines = [f"**Settings of {neutralise(ctx.guild.name if ctx.guild else '', limit=100)}**",
                 f"prefix: {prefix}", f"log channel: {log}",
                 f"automod: {AUTOMOD_NAMES[cfg.automod_level] if 0 <= cfg.automod_level < 4 else cfg.automod_level}",
                 f"features: {features}",
                 "Change one with `/settings set key:<key> value:<value>`."]
        await respond(ctx, "\n".join(lines))

    @subcommand(settings, "set", description="Change one setting of this server.", feature="settings",
                level=Level.ADMIN, floor=Level.MOD, guild_only=True, audit=True,
                throttle=ThrottleRule(10, 60.0, "guild"),
                examples=("/settings set key:prefix value:?", "/settings set key:feature.reminders value:off",
                          "/settings set key:automod value:medium"))
    async def set_setting(self, ctx: commands.Context[Any], key: SettingKey, *,
                          value: commands.Range[str, 1, 100]) -> None:
        """Set ``key`` to ``value``.

        Parameters
        ----------
        key:
            prefix, log_channel, automod, or feature.<aliases|feedback|reminders|stats>.
        value:
            The new value: a prefix, a #channel (or none), off/low/medium/high, on/off, or reset.
        """
        guild_id = self.guild_id(ctx)
        if key == "prefix":
            prefix = parse_prefix(value)
            await db_guilds.set_prefix(self.db, guild_id, prefix)
            done = f"The prefix is now `{prefix or self.deps.settings.default_prefix}`."
        elif key == "log_channel":
            done = await self._set_log_channel(ctx, guild_id, value)
        elif key == "automod":
            level = parse_automod(value)
            await db_guilds.set_automod_level(self.db, guild_id, level)
            done = f"Automod is now {AUTOMOD_NAMES[level]}."
        else:
            feature = key.split(".", 1)[1]
            switch = parse_switch(value)
            if switch is None:
                await db_guilds.clear_feature(self.db, guild_id, feature)
            else:
                await db_guilds.set_feature(self.db, guild_id, feature, switch)
            done = f"The {feature} feature is now {'on' if switch in (None, True) else 'off'}."
        await self.invalidate(ctx)
        await respond(ctx, done, ephemeral=False)

    async def _set_log_channel(self, ctx: commands.Context[Any], guild_id: int, value: str) -> str:
        v = value.strip()
        if v.lower() in ("none", "off", "reset"):
            await db_guilds.set_log_channel(self.db, guild_id, None)
            return "The log channel is cleared."
        match = _CHANNEL_RE.match(v)
        channel = ctx.guild.get_channel(int(match.group(1))) if match and ctx.guild else None
        if not isinstance(channel, discord.TextChannel):
            raise _bad("Give a text channel of this server, like #logs (or `none`).")
        await db_guilds.set_log_channel(self.db, guild_id, channel.id)
        return f"The log channel is now {channel.mention}."


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Settings(bot))
