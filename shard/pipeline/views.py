"""Buttons and modals that continue a command: pagination, confirmation, and their error handling.

A component click or a modal submit is a new interaction, not a command, so it does not pass the
pipeline again; it was authorised when the command that showed it ran. Each view therefore only
answers the user who ran that command (:meth:`OwnedView.interaction_check`), validates any text it
receives, and maps its errors through the same :func:`~shard.pipeline.error_replies.map_error` into a
short ephemeral reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord.ext import commands

from .context import respond
from .error_replies import map_error
from .validation import NO_MENTIONS

__all__ = ("OwnedView", "Paginator", "Confirm", "send_pages", "component_error")

_log = logging.getLogger(__name__)


async def component_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the user a button or modal failed, never raising."""
    failure = map_error(error)
    if failure.unexpected:
        _log.error("component interaction failed: %s", error, exc_info=error)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(failure.render(), ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(failure.render(), ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException as exc:
        _log.warning("could not report a component failure: %s", exc)


class OwnedView(discord.ui.View):
    """A view only the user who ran the command may use."""

    def __init__(self, owner_id: int, *, timeout: float = 180.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message("These buttons belong to someone else's command.", ephemeral=True)
        return False

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception,
                       item: discord.ui.Item[Any]) -> None:
        await component_error(interaction, error)


class Paginator(OwnedView):
    """Previous/next buttons over pre-rendered pages."""

    def __init__(self, owner_id: int, pages: list[str], *, timeout: float = 180.0) -> None:
        super().__init__(owner_id, timeout=timeout)
        if not pages:
            raise ValueError("a paginator needs at least one page")
        self.pages = pages
        self.index = 0
        self._sync()

    def render(self) -> str:
        return f"{self.pages[self.index]}\n-# page {self.index + 1}/{len(self.pages)}"

    def _sync(self) -> None:
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index >= len(self.pages) - 1

    async def _show(self, interaction: discord.Interaction[Any]) -> None:
        self._sync()
        await interaction.response.edit_message(content=self.render(), view=self, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        self.index = max(0, self.index - 1)
        await self._show(interaction)

    @discord.ui.button(label="Next", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        self.index = min(len(self.pages) - 1, self.index + 1)
        await self._show(interaction)


async def send_pages(ctx: commands.Context[Any], pages: list[str], *, ephemeral: bool = True) -> None:
    """Send one page, or the first of several with a :class:`Paginator`."""
    if len(pages) <= 1:
        await respond(ctx, pages[0] if pages else "Nothing to show.", ephemeral=ephemeral)
        return
    view = Paginator(ctx.author.id, pages)
    await respond(ctx, view.render(), ephemeral=ephemeral, view=view)


class Confirm(OwnedView):
    """Confirm / Cancel for a destructive action; ``on_confirm`` runs when the owner confirms.

    ``on_confirm`` must answer the interaction (e.g. ``interaction.response.edit_message``).
    """

    def __init__(self, owner_id: int, on_confirm: Callable[[discord.Interaction[Any]], Awaitable[None]], *,
                 confirm_label: str = "Confirm", timeout: float = 120.0) -> None:
        super().__init__(owner_id, timeout=timeout)
        self.on_confirm = on_confirm
        self.value: bool | None = None
        self.confirm.label = confirm_label

    def _disable(self) -> None:
        self.confirm.disabled = True
        self.cancel.disabled = True

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        self.value = True
        self._disable()
        self.stop()
        await self.on_confirm(interaction)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        self.value = False
        self._disable()
        self.stop()
        await interaction.response.edit_message(content="Cancelled; nothing was changed.", view=self)
