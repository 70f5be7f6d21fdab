"""Shed slash commands before discord.py parses them, while the cluster has no place for them.

When every place of the command :class:`~shard.pipeline.admission.Admission` is taken and the queue
refuses newcomers (:attr:`~shard.pipeline.admission.Admission.saturated`), a slash command would only
be parsed into discord.py's objects, routed through the command tree, converted, and then refused
with the busy message. Past capacity that work is what the cluster has none of, and it grows with
the overload. :class:`EarlyShed` wraps discord.py's INTERACTION_CREATE parser and answers such an
interaction from its raw payload instead: one interaction callback (exempt from the global limit, as
every callback is) with the same ephemeral message and code as a shed command (``E5008``), and
nothing else: no Interaction object, no command tree, no usage row. It is counted as shed
(``innkeeper_commands_shed_total{reason="early"}`` and ``innkeeper_commands_total{outcome="shed"}``).

A slash command that reaches the cluster more than 3 s after Discord created it (its id says when)
can no longer be answered: Discord refuses a first response after 3 s ("Unknown interaction"), and
the user has already been told the application did not respond. Past capacity the gateway backlog
delivers such commands; running them would only spend the cluster's time on answers nobody can
receive, and do what the user believes failed (a reminder set twice when they try again). They are
dropped unparsed, counted in ``innkeeper_commands_expired_total``.

Only application commands (type 2) are shed or dropped here; autocomplete, buttons and modals go on
as before (they are parts of conversations already admitted). Nothing here may raise into the
gateway reader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord.webhook.async_ import async_context, interaction_response_params
from prometheus_client import Counter

from innkeeper.errors import ErrorCode
from innkeeper.services import BackgroundTasks

from .pipeline.admission import SHED_MESSAGE
from .pipeline.command_metrics import record_command

if TYPE_CHECKING:
    from discord.ext import commands

    from .pipeline.admission import Admission

__all__ = ("EarlyShed",)

_log = logging.getLogger(__name__)

EXPIRED = Counter("innkeeper_commands_expired_total",
                  "Slash commands dropped unparsed: they reached the cluster after Discord's 3 s to answer")

#: Discord's snowflake epoch (ms), and how long an interaction accepts its first response.
_DISCORD_EPOCH_MS = 1_420_070_400_000
_ANSWER_WITHIN_S = 3.0
_APPLICATION_COMMAND = 2
_CHANNEL_MESSAGE = 4
_EPHEMERAL = 64
#: The answer of a shed command, as the pipeline renders it.
_ANSWER = {"content": f"{SHED_MESSAGE} ({ErrorCode.COMMAND_SHED.value})", "flags": _EPHEMERAL,
           "allowed_mentions": {"parse": []}}


class EarlyShed:
    """Answers slash commands with the busy message, unparsed, while admission is saturated.

    Parameters
    ----------
    admission:
        The pipeline's admission (read at each interaction: tests may replace it).
    reply_timeout:
        Seconds the answer may take before it is given up (``INNKEEPER_REPLY_TIMEOUT``).
    """

    __slots__ = ("admission", "reply_timeout", "shed", "expired", "clock", "_parse", "_state", "_bot", "_tasks")

    def __init__(self, admission: Callable[[], Admission], *, reply_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.admission = admission
        self.reply_timeout = reply_timeout
        self.clock = clock
        #: Interactions answered here since the process started, and those dropped as too old to answer.
        self.shed = 0
        self.expired = 0
        self._parse: Callable[[Any], None] | None = None
        self._state: Any = None
        self._bot: commands.Bot | commands.AutoShardedBot | None = None
        self._tasks = BackgroundTasks("early-shed")

    def install(self, bot: commands.Bot | commands.AutoShardedBot) -> None:
        """Wrap ``bot``'s INTERACTION_CREATE parser (before the tracker wraps the parsers)."""
        state = getattr(bot, "_connection", None)
        parsers: dict[str, Callable[[Any], None]] | None = getattr(state, "parsers", None)
        if state is None or parsers is None or "INTERACTION_CREATE" not in parsers:
            _log.warning("discord.py has no INTERACTION_CREATE parser here: no early shedding")
            return
        self._bot, self._state, self._parse = bot, state, parsers["INTERACTION_CREATE"]
        parsers["INTERACTION_CREATE"] = self.on_interaction

    def on_interaction(self, data: Any) -> None:
        """The wrapped parser: shed a slash command at once while admission is saturated, else parse it."""
        assert self._parse is not None
        if not (isinstance(data, dict) and data.get("type") == _APPLICATION_COMMAND):
            self._parse(data)
            return
        try:
            interaction_id = int(data["id"])
            token = data["token"]
        except (KeyError, TypeError, ValueError):
            self._parse(data)  # discord.py judges a strange payload
            return
        if self.clock() - ((interaction_id >> 22) + _DISCORD_EPOCH_MS) / 1000 > _ANSWER_WITHIN_S:
            self.expired += 1
            EXPIRED.inc()
            return
        if self.admission().saturated and isinstance(token, str):
            self.shed += 1
            self.admission().shed_early()
            record_command(self._command_name(data), "shed", 0.0)
            self._tasks.spawn(self._answer(interaction_id, token), name="answer")
            return
        self._parse(data)

    def _command_name(self, data: dict[str, Any]) -> str:
        """The command's name when the bot has such a command (metric labels stay bounded), else ``unknown``."""
        inner = data.get("data")
        name = inner.get("name") if isinstance(inner, dict) else None
        bot = self._bot
        tree = getattr(bot, "tree", None)
        if isinstance(name, str) and tree is not None and tree.get_command(name) is not None:
            return name
        return "unknown"

    async def _answer(self, interaction_id: int, token: str) -> None:
        http = self._state.http
        try:
            async with asyncio.timeout(self.reply_timeout):
                await async_context.get().create_interaction_response(
                    interaction_id, token, session=http._HTTPClient__session, proxy=http.proxy,
                    proxy_auth=http.proxy_auth, params=interaction_response_params(_CHANNEL_MESSAGE, dict(_ANSWER)))
        except (discord.HTTPException, TimeoutError, OSError) as exc:
            _log.info("could not tell a user their command was shed: %s", exc)

    async def start(self) -> None:
        """Nothing to start: answers are spawned as interactions come."""

    async def stop(self) -> None:
        """Cancel the answers still on their way (the cluster is closing)."""
        await self._tasks.cancel()
