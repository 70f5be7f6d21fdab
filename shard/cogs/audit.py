"""``/audit recent|verify``: the server's hash-chained log of admin actions.

Every command whose spec says ``audit=True`` appends to the guild's chain through the pipeline
(the action; refused attempts as one row per user and command per window, with their count, which
``recent`` shows as "refused ×N"). ``verify`` recomputes every hash of the chain (``db.audit.verify``)
and names the first rows that do not match.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from db import audit as db_audit
from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, group, respond, subcommand
from shard.pipeline.validation import neutralise
from shard.pipeline.views import send_pages

if TYPE_CHECKING:
    from db.audit import AuditEntry
    from shard.bot import ClusterBot

__all__ = ("Audit", "setup", "render_entry")


def render_entry(entry: AuditEntry) -> str:
    """One line per entry; a person erased on their request shows as their pseudonym, the same in every entry."""
    when = f"<t:{int(entry.created_at.timestamp())}:f>"
    if entry.actor_id:
        actor = f"<@{entry.actor_id}>"
    elif entry.actor_pseudonym:
        actor = f"`{entry.actor_pseudonym}`"
    else:
        actor = "the bot"
    details = entry.details if isinstance(entry.details, dict) else {}
    outcome = details.get("outcome")
    args = details.get("args")
    shown = neutralise(json.dumps(args, ensure_ascii=False, separators=(", ", ": ")), limit=160) if args else ""
    attempts = details.get("attempts")
    flag = ""
    if outcome == "denied":
        flag = f" **refused** ×{attempts}" if isinstance(attempts, int) and attempts > 1 else " **refused**"
    on = f" on `{entry.target_pseudonym}`" if entry.target_pseudonym else ""
    if entry.action.startswith("automod.") and "action" in details:  # the author acted on, what was done, how often
        on = on or (f" on <@{entry.target_id}>" if entry.target_id else "")
        count = details.get("count")
        shown = f"{details['action']}" + (f" ×{count}" if isinstance(count, int) and count > 1 else "")
    note = " (redacted on the user's request)" if entry.redacted else ""
    return f"`#{entry.id}` {when} {actor} {entry.action}{flag}{on} {shown}".rstrip() + note


class Audit(PipelineCog):
    """The audit log."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    @group("audit", description="This server's log of admin actions.", feature="audit", guild_only=True)
    async def audit(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(audit, "recent", description="The latest admin actions in this server.", feature="audit",
                level=Level.ADMIN, floor=Level.MOD, guild_only=True, ephemeral=True,
                examples=("/audit recent", "/audit recent limit:100"))
    async def recent(self, ctx: commands.Context[Any], limit: commands.Range[int, 1, 200] = 50) -> None:
        """Show recent entries, newest first, ten per page.

        Parameters
        ----------
        limit:
            How many entries to show (1-200).
        """
        entries = await db_audit.recent(self.db, self.guild_id(ctx), limit=limit)
        if not entries:
            await respond(ctx, "The audit log of this server is empty.")
            return
        lines = [render_entry(e) for e in entries]
        pages = ["\n".join(lines[i:i + 10]) for i in range(0, len(lines), 10)]
        await send_pages(ctx, [f"**Audit log** ({len(entries)} latest)\n{p}" for p in pages])

    @subcommand(audit, "verify", description="Check that nobody tampered with this server's audit log.",
                feature="audit", level=Level.ADMIN, floor=Level.MOD, guild_only=True, defer=True, timeout=60.0,
                throttle=ThrottleRule(2, 60.0, "guild"), examples=("/audit verify",))
    async def verify(self, ctx: commands.Context[Any]) -> None:
        """Recompute the hash chain of this server's audit log."""
        result = await db_audit.verify(self.db, guild_id=self.guild_id(ctx), all_chains=False)
        if result.ok:
            await respond(ctx, f"The audit log is intact: {result.rows} entries checked, every hash matches.",
                          ephemeral=False)
            return
        lines = [f"**The audit log does not verify**: {len(result.problems)} problem(s) in {result.rows} entries."]
        lines += [f"- {neutralise(str(p), limit=200)}" for p in result.problems[:10]]
        await respond(ctx, "\n".join(lines), ephemeral=False)


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Audit(bot))
