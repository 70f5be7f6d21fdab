"""``/alias add|remove|list``: short names for command lines, per server or personal.

Aliases expand for prefix commands (``!r`` → ``!remind 10m stretch``); the rules (no shadowing of
real commands, no cycles, bounded length and depth) are in :mod:`shard.pipeline.aliasing`. Every
change drops the scope's cached table on every cluster (:mod:`shard.pipeline.alias_cache`). A
personal alias works in every server and wins over a server alias of the same name. Server aliases
need the mod level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from discord.ext import commands

from db import aliases as db_aliases
from innkeeper.errors import CommandError, ErrorCode
from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, group, respond, subcommand
from shard.pipeline.aliasing import Resolver, check_alias
from shard.pipeline.validation import neutralise

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Aliases", "setup")

AliasScope = Literal["personal", "server"]


class Aliases(PipelineCog):
    """Command aliases."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    def _scope(self, ctx: commands.Context[Any], scope: AliasScope) -> tuple[db_aliases.Scope, int]:
        if scope == "server":
            guild_id = self.guild_id(ctx)
            if self.level(ctx) < Level.MOD:
                raise CommandError("Server aliases need the mod level; make a personal one instead "
                                   "(scope:personal).", code=ErrorCode.COMMAND_FORBIDDEN)
            return "guild", guild_id
        return "user", ctx.author.id

    def _resolver(self, ctx: commands.Context[Any], scope: db_aliases.Scope) -> Resolver:
        """What names mean in the scope the new alias will live in, read from the database (not the cache:
        the checks must see what is stored now)."""
        if scope == "user":
            guild = ctx.guild.id if ctx.guild else None

            async def resolve_mine(name: str) -> str | None:
                found = await db_aliases.resolve_alias(self.db, guild, ctx.author.id, name)
                return found.command if found is not None else None
            return resolve_mine
        guild_id = self.guild_id(ctx)

        async def resolve(name: str) -> str | None:
            found = await db_aliases.get_alias(self.db, "guild", guild_id, name)
            return found.command if found is not None else None
        return resolve

    async def _prefixes(self, ctx: commands.Context[Any]) -> tuple[str, ...]:
        cfg = await self.deps.guild_config.get(ctx.guild.id) if ctx.guild is not None else None
        return tuple(p for p in (self.deps.settings.default_prefix, cfg.prefix if cfg else None, ctx.prefix) if p)

    @group("alias", description="Short names for commands you type often (prefix commands).", feature="aliases")
    async def alias(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(alias, "add", description="Make an alias: a short name for a command line.", feature="aliases",
                audit=True, throttle=ThrottleRule(10, 60.0, "user"),
                examples=("/alias add name:r command:remind 10m stretch",
                          "/alias add name:p scope:server command:ping"))
    async def add(self, ctx: commands.Context[Any], name: commands.Range[str, 1, 32],
                  scope: AliasScope | None = None, *, command: commands.Range[str, 1, 1000]) -> None:
        """Create an alias.

        Parameters
        ----------
        name:
            The short name (letters, digits, _ or -); it can't be a command's name.
        command:
            What it runs, without the prefix, e.g. remind 10m stretch.
        scope:
            personal (yours, in every server) or server (everyone here; needs mod).
        """
        kind, scope_id = self._scope(ctx, scope or "personal")
        key = name.lower()
        line = await check_alias(key, command, resolve=self._resolver(ctx, kind),
                                 is_command=lambda w: self.bot.get_command(w) is not None,
                                 prefixes=await self._prefixes(ctx))
        await db_aliases.create_alias(self.db, kind, scope_id, key, line, created_by=ctx.author.id)
        await self.deps.aliases.invalidate(kind, scope_id)
        shown = neutralise(line, limit=200)
        where = "for everyone here" if kind == "guild" else "for you"
        await respond(ctx, f"Alias `{key}` → `{shown}` created {where}. Use it as `{await self._prefix(ctx)}{key}`.",
                      ephemeral=kind == "user")

    async def _prefix(self, ctx: commands.Context[Any]) -> str:
        cfg = await self.deps.guild_config.get(ctx.guild.id) if ctx.guild is not None else None
        return (cfg.prefix if cfg and cfg.prefix else None) or self.deps.settings.default_prefix

    @subcommand(alias, "remove", description="Delete an alias.", feature="aliases", audit=True,
                examples=("/alias remove name:r",))
    async def remove(self, ctx: commands.Context[Any], name: commands.Range[str, 1, 32],
                     scope: AliasScope | None = None) -> None:
        """Delete an alias.

        Parameters
        ----------
        name:
            The alias.
        scope:
            personal or server (server needs mod).
        """
        kind, scope_id = self._scope(ctx, scope or "personal")
        key = name.lower()
        if not await db_aliases.delete_alias(self.db, kind, scope_id, key):
            raise CommandError(f"There is no {scope or 'personal'} alias `{neutralise(key, limit=32)}`.",
                               code=ErrorCode.NOT_FOUND)
        await self.deps.aliases.invalidate(kind, scope_id)
        await respond(ctx, f"Alias `{key}` deleted.", ephemeral=kind == "user")

    @subcommand(alias, "list", description="Your aliases and this server's.", feature="aliases", ephemeral=True,
                examples=("/alias list",))
    async def list_(self, ctx: commands.Context[Any]) -> None:
        """List personal and server aliases."""
        mine = await db_aliases.list_aliases(self.db, "user", ctx.author.id)
        server = await db_aliases.list_aliases(self.db, "guild", ctx.guild.id) if ctx.guild is not None else []
        lines = []
        for title, items in (("Your aliases", mine), ("This server's aliases", server)):
            lines.append(f"**{title}** ({len(items)}):")
            lines.extend(f"`{a.name}` → `{neutralise(a.command, limit=120)}`" for a in items[:40])
            if len(items) > 40:
                lines.append(f"…and {len(items) - 40} more.")
        await respond(ctx, "\n".join(lines))


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Aliases(bot))
