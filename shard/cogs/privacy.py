"""``/privacy export|delete|retention``: users get and erase their own data.

``export`` DMs a JSON file with every row about the user (``db.privacy.export_user``). ``delete``
asks for confirmation with a button, then erases the user everywhere in one transaction
(``db.privacy.erase_user``). In the audit log of admin actions the user is replaced by a keyed
pseudonym rather than removed: who did what stays on record, and the chain still verifies. Usage
rows of the user still buffered in any cluster are dropped when they arrive (``db.usage``).
``retention`` says how long each kind of data is kept; the clusters delete what is older
(``shard.maintenance``).
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from db import privacy as db_privacy
from innkeeper.errors import CommandError, DatabaseError, ErrorCode
from shard.cogs.base import PipelineCog
from shard.pipeline import ThrottleRule, group, respond, subcommand
from shard.pipeline.views import Confirm, component_error

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Privacy", "setup")

_log = logging.getLogger(__name__)


class Privacy(PipelineCog):
    """Data export, erasure and retention."""

    def __init__(self, bot: ClusterBot) -> None:
        super().__init__(bot)

    @group("privacy", description="Your data: export it, delete it, see how long it is kept.", feature="privacy")
    async def privacy(self, ctx: commands.Context[Any]) -> None:
        await self.group_help(ctx)

    @subcommand(privacy, "export", description="Get everything the bot stores about you, as a JSON file by DM.",
                feature="privacy", defer=True, ephemeral=True, throttle=ThrottleRule(2, 3600.0, "user"),
                timeout=60.0, examples=("/privacy export",))
    async def export(self, ctx: commands.Context[Any]) -> None:
        """DM the caller a JSON file of their data."""
        await self._flush_usage()
        data = await db_privacy.export_user(self.db, self.deps.require_keys(), ctx.author.id)
        raw = json.dumps(data, ensure_ascii=False, indent=2).encode()
        name = f"innkeeper-data-{ctx.author.id}.json"
        try:
            dm = await self.bot.create_dm(discord.Object(ctx.author.id))
            await dm.send("Here is everything I store about you.", file=discord.File(io.BytesIO(raw), name))
        except discord.HTTPException as exc:
            _log.info("export DM to %s failed: %s", ctx.author.id, exc)
            if ctx.interaction is None:
                raise CommandError("I couldn't DM you; allow DMs from this server and try again.",
                                   code=ErrorCode.COMMAND_FAILED) from None
            await respond(ctx, "I couldn't DM you, so here it is (only you can see this).",
                          file=discord.File(io.BytesIO(raw), name))
            return
        counts = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in data.items() if isinstance(v, list))
        await respond(ctx, f"I've sent your data by DM ({counts}).")

    @subcommand(privacy, "delete", description="Erase everything the bot stores about you (asks to confirm).",
                feature="privacy", ephemeral=True, throttle=ThrottleRule(3, 3600.0, "user"),
                examples=("/privacy delete",))
    async def delete(self, ctx: commands.Context[Any]) -> None:
        """Ask for confirmation, then erase the caller's data."""
        user_id = ctx.author.id

        pseudonyms = self.deps.require_pseudonyms()

        async def erase(interaction: discord.Interaction[Any]) -> None:
            try:
                # refusals counted here are written first, so that the erasure pseudonymises them
                await self.deps.pipeline.denials.settle_user(user_id)
                counts = await db_privacy.erase_user(self.db, user_id, pseudonyms=pseudonyms)
            except (DatabaseError, CommandError) as exc:
                await component_error(interaction, exc)
                return
            await self.deps.aliases.invalidate("user", user_id)  # their personal aliases are gone
            total = sum(counts.values())
            await interaction.response.edit_message(
                content=f"Done: {total} records about you were erased or anonymised. In the log of admin "
                        "actions you now appear under a pseudonym, so the log stays accountable and verifiable.",
                view=view)

        view = Confirm(user_id, erase, confirm_label="Erase my data")
        await respond(ctx, "This erases your reminders, feedback, aliases and usage history on every server, "
                           "for good. The log of admin actions keeps what was done, with you under a "
                           "pseudonym. Are you sure?", view=view)

    @subcommand(privacy, "retention", description="How long the bot keeps each kind of data.", feature="privacy",
                ephemeral=True, examples=("/privacy retention",), needs=())  # from the settings alone
    async def retention(self, ctx: commands.Context[Any]) -> None:
        """Retention per table, from the bot's configuration."""
        ages = db_privacy.RetentionPolicy.from_settings(self.deps.settings).ages()
        names = {"command_usage": "command usage", "error_events": "error reports",
                 "feedback": "closed feedback", "reminders": "delivered reminders"}
        lines = ["**How long your data is kept**"]
        for table, days in ages.items():
            lines.append(f"- {names.get(table, table)}: {f'{days} days' if days else 'until you delete it'}")
        lines += ["- pending reminders, open feedback and aliases: until you delete them",
                  "- the audit log of admin actions: kept, for accountability; `/privacy delete` replaces you "
                  "in it by a pseudonym",
                  _cadence(self.deps.settings.retention_interval_s),
                  "Feedback and reminder text is encrypted at rest. `/privacy export` shows all of it."]
        await respond(ctx, "\n".join(lines))

    async def _flush_usage(self) -> None:
        try:
            await self.deps.usage.flush()
        except DatabaseError as exc:
            _log.warning("could not flush usage before a privacy request: %s", exc)


def _cadence(seconds: float) -> str:
    """When older data goes: ``3600`` → "… every hour", ``21600`` → "… every 6 hours", ``0`` → by the operator."""
    if seconds <= 0:
        return "Older data is deleted by the bot's operator (`innkeeper retention`)."
    if seconds >= 3600:
        hours = round(seconds / 3600)
        every = "hour" if hours == 1 else f"{hours} hours"
    else:
        minutes = max(1, round(seconds / 60))
        every = "minute" if minutes == 1 else f"{minutes} minutes"
    return f"Older data is deleted automatically, every {every}."


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Privacy(bot))
