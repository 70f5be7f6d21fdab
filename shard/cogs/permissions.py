"""``/permissions role|command|list``: who may run what in a server.

The grant rules live in :mod:`shard.pipeline.levels` (nobody grants above their own level, changes
a role or a command above their own level, or grants ``owner``) and :mod:`shard.pipeline.role_grants`
(a role grant needs Discord's Manage Roles permission and a role below the caller's top role, and
never goes to @everyone or a managed role); this cog applies them with the caller's level as the
pipeline resolved it, writes through ``db.permissions`` and invalidates the guild's cached
configuration on every cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from db import permissions as db_permissions
from innkeeper.errors import CommandError, ErrorCode
from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, group, respond, spec_of, subcommand
from shard.pipeline.levels import check_command_override, check_role_grant, required_level
from shard.pipeline.role_grants import actor_facts, check_role_target, counts_for_levels, role_facts
from shard.pipeline.validation import neutralise

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Permissions", "setup", "LOCKED_FEATURES", "LOCKED_COMMANDS")

#: Commands of these features, and /help, cannot be turned off (a server could lock itself out, or users
#: could lose their privacy rights).
LOCKED_FEATURES = ("settings", "permissions", "privacy")
LOCKED_COMMANDS = ("help",)


def _level_arg(text: str) -> Level:
    try:
        return Level.parse(text)
    except ValueError as exc:
        raise CommandError(f"`{neutralise(text, limit=20)}`: {exc}.", code=ErrorCode.COMMAND_BAD_ARGUMENT) from None


class Permissions(PipelineCog):
    """Role levels and per-command overrides."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    @group("permissions", description="See or change who may run which commands here.", feature="permissions",
           guild_only=True)
    async def permissions(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(permissions, "role", description="Give a role below yours a permission level (needs Manage Roles).",
                feature="permissions", level=Level.MOD, floor=Level.MOD, guild_only=True, audit=True,
                throttle=ThrottleRule(10, 60.0, "guild"),
                examples=("/permissions role role:@Helpers level:mod",))
    async def role(self, ctx: commands.Context[Any], role: discord.Role, level: commands.Range[str, 1, 20]) -> None:
        """Set the level a role grants its members.

        You need Discord's Manage Roles permission, and the role must be below your highest role;
        @everyone and managed roles (bots, integrations, boosters) can't have a level.

        Parameters
        ----------
        role:
            The role (below your highest role; not @everyone, not a bot's or integration's role).
        level:
            everyone (removes the grant), mod or admin; never above your own level.
        """
        guild_id = self.guild_id(ctx)
        if role.guild.id != guild_id:
            raise CommandError("That role is not from this server.", code=ErrorCode.COMMAND_BAD_ARGUMENT)
        new = _level_arg(level)
        if not isinstance(ctx.author, discord.Member):
            raise CommandError("I can't see your roles in this server right now; try again in a moment.",
                               code=ErrorCode.COMMAND_FORBIDDEN)
        cfg = await self.deps.guild_config.get(guild_id)
        check_role_grant(self.level(ctx), cfg.role_levels.get(role.id), new)
        check_role_target(actor_facts(ctx.author), role_facts(role), new)
        await db_permissions.set_role_level(self.db, guild_id, role.id, int(new))
        await self.invalidate(ctx)
        name = neutralise(role.name, limit=100)
        await respond(ctx, f"Members of {name} now have the {new.label} level." if new > Level.EVERYONE
                      else f"{name} no longer grants a level.", ephemeral=False)

    @subcommand(permissions, "command", description="Change the level a command needs here, or turn it on/off.",
                feature="permissions", level=Level.ADMIN, floor=Level.MOD, guild_only=True, audit=True,
                throttle=ThrottleRule(10, 60.0, "guild"),
                examples=("/permissions command command:remind setting:mod",
                          "/permissions command command:stats daily setting:off",
                          "/permissions command command:remind setting:reset"))
    async def command_(self, ctx: commands.Context[Any], command: commands.Range[str, 1, 60],
                       setting: commands.Range[str, 1, 20]) -> None:
        """Override one command in this server.

        Parameters
        ----------
        command:
            The command, e.g. remind or settings set.
        setting:
            everyone, mod or admin; on or off; or reset to its default.
        """
        guild_id = self.guild_id(ctx)
        name = " ".join(command.strip().lstrip("/").lower().split())
        target = self.bot.get_command(name)
        target_spec = spec_of(target)
        if target is None or target_spec is None or isinstance(target, commands.Group):
            raise CommandError(f"There is no command `{neutralise(name, limit=60)}`; see `/help`.",
                               code=ErrorCode.NOT_FOUND)
        name = target.qualified_name
        cfg = await self.deps.guild_config.get(guild_id)
        current = cfg.override(name)
        needed = required_level(target_spec.level, current.level if current else None, target_spec.floor)
        actor = self.level(ctx)
        choice = setting.strip().lower()
        if choice in ("on", "off", "reset"):
            if needed > actor or target_spec.level is Level.OWNER:
                raise CommandError(f"/{name} requires {needed.label}, above your own level ({actor.label}).",
                                   code=ErrorCode.COMMAND_FORBIDDEN)
            if choice == "off" and (target_spec.feature in LOCKED_FEATURES or name in LOCKED_COMMANDS):
                raise CommandError(f"/{name} can't be turned off.", code=ErrorCode.COMMAND_BAD_ARGUMENT)
            if choice == "reset":
                await db_permissions.clear_command_override(self.db, guild_id, name)
                done = f"/{name} is back to its defaults (needs {target_spec.level.label})."
            else:
                await db_permissions.set_command_override(
                    self.db, guild_id, name, min_level=None if current is None or current.level is None
                    else int(current.level), enabled=choice == "on")
                done = f"/{name} is now {choice} in this server."
        else:
            new = _level_arg(choice)
            check_command_override(actor, command=name, default=target_spec.level, floor=target_spec.floor,
                                   current=needed, new=new)
            await db_permissions.set_command_override(self.db, guild_id, name, min_level=int(new),
                                                      enabled=current.enabled if current else True)
            done = f"/{name} now needs the {new.label} level here."
        await self.invalidate(ctx)
        await respond(ctx, done, ephemeral=False)

    @subcommand(permissions, "list", description="Show the role levels and command overrides of this server.",
                feature="permissions", guild_only=True, ephemeral=True, examples=("/permissions list",))
    async def list_(self, ctx: commands.Context[Any]) -> None:
        """Role levels, command overrides, and your own level."""
        guild = ctx.guild
        cfg = await self.deps.guild_config.get(self.guild_id(ctx))
        lines = [f"Your level here: **{self.level(ctx).label}** (owners come from the bot's configuration; "
                 "server admins and members with Administrator are admin; moderators are mod)."]
        if cfg.role_levels:
            lines.append("Roles:")
            for rid, lvl in sorted(cfg.role_levels.items(), key=lambda kv: (-kv[1], kv[0])):
                role = guild.get_role(rid) if guild is not None else None
                label = neutralise(role.name, limit=100) if role is not None else f"deleted role {rid}"
                ignored = role is not None and guild is not None and not counts_for_levels(role, guild.id)
                lines.append(f"- {label}: {lvl.label}" + (" (ignored: @everyone and managed roles can't have "
                                                           "a level; remove it)" if ignored else ""))
        else:
            lines.append("No role has a level.")
        if cfg.overrides:
            lines.append("Command overrides:")
            for name, override in sorted(cfg.overrides.items()):
                parts = [] if override.level is None else [f"needs {override.level.label}"]
                if not override.enabled:
                    parts.append("off")
                lines.append(f"- /{neutralise(name, limit=60)}: {', '.join(parts) or 'default'}")
        else:
            lines.append("No command overrides.")
        await respond(ctx, "\n".join(lines))


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Permissions(bot))
