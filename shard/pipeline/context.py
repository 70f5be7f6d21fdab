"""The invocation context every command gets, and the ways the bot answers a user.

:class:`PipelineContext` is discord.py's ``Context`` (``ClusterBot.get_context`` returns it for
messages and interactions alike) plus the pipeline's per-invocation state: when it started, the
caller's resolved level, whether the command's body ran, and whether its outcome was recorded.

Two ways to answer, neither ever pinging anyone, nor posting in a channel where discord.py's cache
says the bot may not post (the reply would only earn a 403, which counts toward Discord's
invalid-request ban):

* :func:`respond` gives a command's answer: ephemeral for an interaction (when asked). For a prefix
  command in a server, an answer that is ephemeral *and* belongs to a command whose spec marks its
  answers ephemeral (``/audit recent``, ``/debug``, ``/feedback list``…) is **sent by DM**, and the
  channel only gets a one-line pointer; a prefix user cannot be answered privately in the channel, and
  these answers are meant for them alone. When the DM is refused (DMs closed), the channel gets a
  pointer to the slash form instead, and never the answer; the refusal is remembered for a while
  (the context's :class:`~shard.channel_access.RefusedTargets`, shared with reminder delivery), so
  repeating the command costs no further 403. Other answers reply to the message.
* :func:`tell` says why a command failed, in place: ephemeral for an interaction, a reply for a message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import discord
from discord.ext import commands

from ..channel_access import RefusedTargets, bot_can_post
from .levels import Level
from .spec import spec_of
from .validation import NO_MENTIONS

__all__ = ("PipelineContext", "InvocationState", "state_of", "respond", "tell", "answers_privately", "DM_POINTER",
           "DM_CLOSED")

_log = logging.getLogger(__name__)

#: What the channel reads when a prefix command's private answer went by DM.
DM_POINTER = "I've sent you the answer by DM."
#: What the channel reads when that DM was refused (``{command}`` is the slash form).
DM_CLOSED = ("I couldn't DM you the answer (your DMs are closed to me). Allow DMs from this server, or use "
             "`/{command}`: its answer is visible only to you.")


class InvocationState:
    """What the pipeline knows about one invocation so far."""

    __slots__ = ("started", "level", "ran", "finished", "outcome", "arguments", "dm_pointed", "dm_refused",
                 "replied")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.level: Level | None = None
        #: The command's body was reached (every stage before it passed).
        self.ran = False
        self.finished = False
        self.outcome: str | None = None
        self.arguments: dict[str, Any] = {}
        #: The channel was told the answer went by DM (once per invocation)...
        self.dm_pointed = False
        #: ...or that the DM was refused (then the rest of the answer is not sent either).
        self.dm_refused = False
        #: An answer was handed to Discord (it may still be on its way): a timeout then sends no second one.
        self.replied = False


class PipelineContext(commands.Context[Any]):
    """discord.py's Context with the pipeline's :class:`InvocationState` attached, and the DMs that
    refused the bot recently (set by ``ClusterBot.get_context``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.pipeline_state = InvocationState()
        self.refused_targets: RefusedTargets | None = None

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        """discord.py's ``send``, shielded from the command's timeout.

        A command whose time runs out while its answer is on its way must not cut the request off
        halfway (Discord may have the message already) and then answer a second time: the request
        finishes, and the pipeline sends no timeout error once an answer was handed over.
        """
        self.pipeline_state.replied = True
        return await asyncio.shield(self._deliver(*args, **kwargs))

    async def _deliver(self, *args: Any, **kwargs: Any) -> Any:
        return await super().send(*args, **kwargs)


def state_of(ctx: commands.Context[Any]) -> InvocationState:
    """The invocation state of ``ctx`` (attached on first use for a plain Context)."""
    state = getattr(ctx, "pipeline_state", None)
    if not isinstance(state, InvocationState):
        state = InvocationState()
        ctx.pipeline_state = state  # type: ignore[attr-defined]
    return state


def answers_privately(ctx: commands.Context[Any]) -> bool:
    """Whether an ephemeral answer to ``ctx`` goes by DM: a prefix command, in a server, whose spec
    marks its answers ephemeral."""
    if ctx.interaction is not None or ctx.guild is None:
        return False
    spec = spec_of(ctx.command)
    return spec is not None and spec.ephemeral


async def _reply(ctx: commands.Context[Any], content: str | None, **kwargs: Any) -> discord.Message | None:
    if bot_can_post(ctx.channel) is False:
        _log.debug("not answering in channel %s: the bot may not post there", ctx.channel.id)
        return None
    return await ctx.send(content, reference=ctx.message.to_reference(fail_if_not_exists=False),
                          mention_author=False, **kwargs)


class _KnownClosed(Exception):
    """The user's DMs refused the bot moments ago: not asked again."""


async def _by_dm(ctx: commands.Context[Any], content: str | None, **kwargs: Any) -> discord.Message | None:
    state = state_of(ctx)
    if state.dm_refused:
        return None
    refused: RefusedTargets | None = getattr(ctx, "refused_targets", None)
    try:
        if refused is not None and refused.get("dm", ctx.author.id) is not None:
            raise _KnownClosed
        channel = ctx.author.dm_channel or await ctx.author.create_dm()
        sent = await channel.send(content, **kwargs)
    except (discord.Forbidden, _KnownClosed) as exc:
        if isinstance(exc, discord.Forbidden):
            _log.info("a private answer to %s could not be sent by DM: %s", ctx.author.id, exc)
            if refused is not None:
                refused.add("dm", ctx.author.id, "dm_closed")
        state.dm_refused = True
        name = ctx.command.qualified_name if ctx.command is not None else "help"
        await _reply(ctx, DM_CLOSED.format(command=name), allowed_mentions=NO_MENTIONS)
        return None
    if not state.dm_pointed:
        state.dm_pointed = True
        await _reply(ctx, DM_POINTER, allowed_mentions=NO_MENTIONS)
    return sent


async def respond(ctx: commands.Context[Any], content: str | None = None, *, ephemeral: bool = True,
                  **kwargs: Any) -> discord.Message | None:
    """Answer the user (see the module docstring): ephemeral for an interaction (when asked), by DM for
    a private prefix answer (:func:`answers_privately`), a reply to their message otherwise.

    Mentions are never allowed unless the caller passes ``allowed_mentions`` explicitly. A prefix
    command in a channel where the bot may not post gets no answer in it (None).
    """
    kwargs.setdefault("allowed_mentions", NO_MENTIONS)
    interaction = ctx.interaction
    if interaction is not None:
        if not interaction.response.is_done():
            await interaction.response.send_message(content, ephemeral=ephemeral, **kwargs)
            return None
        return await interaction.followup.send(content or discord.utils.MISSING, ephemeral=ephemeral,
                                               wait=True, **kwargs)
    if ephemeral and answers_privately(ctx):
        return await _by_dm(ctx, content, **kwargs)
    return await _reply(ctx, content, **kwargs)


async def tell(ctx: commands.Context[Any], content: str) -> discord.Message | None:
    """Say why a command failed, in place: ephemeral for an interaction, a reply to a message."""
    interaction = ctx.interaction
    if interaction is not None:
        if not interaction.response.is_done():
            await interaction.response.send_message(content, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return None
        return await interaction.followup.send(content, ephemeral=True, wait=True, allowed_mentions=NO_MENTIONS)
    return await _reply(ctx, content, allowed_mentions=NO_MENTIONS)
