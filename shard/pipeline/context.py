"""The invocation context every command gets, and the one way the bot answers a user.

:class:`PipelineContext` is discord.py's ``Context`` (``ClusterBot.get_context`` returns it for
messages and interactions alike) plus the pipeline's per-invocation state: when it started, the
caller's resolved level, whether the command's body ran, and whether its outcome was recorded.
:func:`respond` answers ephemerally for an interaction and with a plain reply for a prefix command,
never pinging anyone, and never in a channel where discord.py's cache says the bot may not post
(the reply would only earn a 403, which counts toward Discord's invalid-request ban).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import discord
from discord.ext import commands

from ..channel_access import bot_can_post
from .levels import Level
from .validation import NO_MENTIONS

__all__ = ("PipelineContext", "InvocationState", "state_of", "respond")

_log = logging.getLogger(__name__)


class InvocationState:
    """What the pipeline knows about one invocation so far."""

    __slots__ = ("started", "level", "ran", "finished", "outcome", "arguments")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.level: Level | None = None
        #: The command's body was reached (every stage before it passed).
        self.ran = False
        self.finished = False
        self.outcome: str | None = None
        self.arguments: dict[str, Any] = {}


class PipelineContext(commands.Context[Any]):
    """discord.py's Context with the pipeline's :class:`InvocationState` attached."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.pipeline_state = InvocationState()


def state_of(ctx: commands.Context[Any]) -> InvocationState:
    """The invocation state of ``ctx`` (attached on first use for a plain Context)."""
    state = getattr(ctx, "pipeline_state", None)
    if not isinstance(state, InvocationState):
        state = InvocationState()
        ctx.pipeline_state = state  # type: ignore[attr-defined]
    return state


async def respond(ctx: commands.Context[Any], content: str | None = None, *, ephemeral: bool = True,
                  **kwargs: Any) -> discord.Message | None:
    """Answer the user: ephemeral for an interaction (when asked), a reply to their message otherwise.

    Mentions are never allowed unless the caller passes ``allowed_mentions`` explicitly. A prefix
    command in a channel where the bot may not post gets no answer (None).
    """
    kwargs.setdefault("allowed_mentions", NO_MENTIONS)
    interaction = ctx.interaction
    if interaction is not None:
        if not interaction.response.is_done():
            await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)
            return None
        return await interaction.followup.send(content or discord.utils.MISSING, ephemeral=ephemeral,
                                               wait=True, **kwargs)
    if bot_can_post(ctx.channel) is False:
        _log.debug("not answering in channel %s: the bot may not post there", ctx.channel.id)
        return None
    return await ctx.send(content, reference=ctx.message.to_reference(fail_if_not_exists=False),
                          mention_author=False, **kwargs)
