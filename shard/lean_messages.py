"""Lean parsing of MESSAGE_CREATE: a message that cannot invoke a command never becomes a discord.py object.

In a big guild nearly every message is chat. discord.py turns each one into a ``Message`` (author,
member, mentions, embeds…), schedules an ``on_message`` task, and ``process_commands`` then builds a
context only to find no prefix. :class:`LeanMessages` wraps discord.py's MESSAGE_CREATE parser and
decides on the raw payload first: a message whose content starts neither with its guild's prefix nor
with a mention is counted and dropped, and only its channel's ``last_message_id`` is updated, as
discord.py would. Everything else takes discord.py's own path, unchanged.

The decision is exact, never a guess: the guild's prefix comes from the fresh local copy of its
configuration (:meth:`~shard.pipeline.store.GuildConfigStore.cached_config`), the very copy the
bot's ``command_prefix`` would read for this message; when there is none (never loaded, expired,
invalidated by a ``/settings`` change in any cluster) the message takes the full path, which loads it.
Aliases are invoked with the prefix too, and the bot has no other per-message listener. What is
lost for a dropped message is its place in discord.py's message cache (``on_message_edit`` and
``on_message_delete`` fire for cached messages only; the raw events still fire).

Automod (:mod:`shard.automod`) is the per-message feature that needs more than the prefix: the
same fresh local copy gives the guild's automod level, so a guild with automod off pays nothing
more; with automod on, :meth:`MessageInspector.inspect` checks the raw payload before the command
decision, whatever that decision is. When there is no fresh copy, the payload is handed to
:meth:`MessageInspector.defer` and the message takes the full path, whose prefix lookup loads the
configuration and hands it back to automod (:class:`~shard.pipeline.prefixes.PrefixResolver`): each
message is inspected exactly once. Bots' messages and messages without text are never inspected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter

if TYPE_CHECKING:
    from discord.ext import commands

    from .pipeline.config import GuildConfig
    from .pipeline.store import GuildConfigStore

__all__ = ("LeanMessages", "MessageInspector", "SKIPPED")

_log = logging.getLogger(__name__)

#: Messages dropped before discord.py parsed them (they could not invoke a command).
SKIPPED = Counter("innkeeper_messages_skipped", "MESSAGE_CREATEs that could not invoke a command, left unparsed")


class MessageInspector(Protocol):
    """A per-message check on raw guild messages (:class:`shard.automod.Automod`)."""

    def inspect(self, data: dict[str, Any], cfg: GuildConfig) -> None:
        """Check a message of a guild whose ``automod_level`` is on (never raises)."""

    def defer(self, data: dict[str, Any]) -> None:
        """Keep a message whose guild configuration is not cached, for when the full path loads it."""


class LeanMessages:
    """Decides, on the raw payload, whether a MESSAGE_CREATE needs discord.py at all.

    Parameters
    ----------
    default_prefix:
        ``INNKEEPER_DEFAULT_PREFIX``: DMs, and guilds without a prefix of their own.
    config:
        The guild configuration store (its fresh local copies give the guild's prefix and automod level).
    automod:
        The per-message check run on every guild message with text, or None.
    """

    __slots__ = ("default_prefix", "config", "automod", "skipped")

    def __init__(self, default_prefix: str, config: GuildConfigStore, automod: MessageInspector | None = None) -> None:
        self.default_prefix = default_prefix
        self.config = config
        self.automod = automod
        #: Messages dropped so far by this filter.
        self.skipped = 0

    def needed(self, data: dict[str, Any]) -> bool:
        """Whether the message could invoke a command (or the answer needs a load): parse it fully.

        Only decides; :meth:`route` also runs automod.
        """
        return self._decide(data, None)

    def route(self, data: dict[str, Any]) -> bool:
        """Run automod on the message where it applies, then say whether it needs parsing (:meth:`needed`)."""
        return self._decide(data, self.automod)

    def _decide(self, data: dict[str, Any], automod: MessageInspector | None) -> bool:
        content = data.get("content")
        if not content or not isinstance(content, str):
            return False  # nothing to invoke a command with (attachments, embeds, stickers), nor to moderate
        author = data.get("author")
        if isinstance(author, dict) and author.get("bot"):
            return False  # discord.py's process_commands ignores bots (our own replies included); so does automod
        guild_id = data.get("guild_id")
        if guild_id is None:  # a DM: the default prefix, or a leading mention
            return content.startswith(("<@", self.default_prefix))
        try:
            cfg = self.config.cached_config(int(guild_id))
        except (TypeError, ValueError):
            return True  # let discord.py judge a strange payload
        if cfg is None:
            if automod is not None:
                automod.defer(data)  # the full path loads the configuration and hands it back
            return True
        if automod is not None and cfg.automod_level:
            automod.inspect(data, cfg)
        if content.startswith("<@"):
            return True  # a leading mention may be the bot's (when_mentioned_or)
        return content.startswith(cfg.prefix or self.default_prefix)

    def install(self, bot: commands.AutoShardedBot) -> None:
        """Wrap discord.py's MESSAGE_CREATE parser of ``bot`` (before anything else wraps it)."""
        state = getattr(bot, "_connection", None)
        parsers: dict[str, Callable[[Any], None]] | None = getattr(state, "parsers", None)
        if state is None or parsers is None or "MESSAGE_CREATE" not in parsers:
            _log.warning("discord.py has no MESSAGE_CREATE parser here: every message is parsed in full%s",
                         "; automod is off"
                         if self.automod is not None else "")
            return
        parse = parsers["MESSAGE_CREATE"]
        decide = self._decide
        automod = self.automod
        inc = SKIPPED.inc

        def lean_parse(data: Any) -> None:
            if decide(data, automod):
                parse(data)
                return
            self.skipped += 1
            inc()
            _touch_channel(state, data)

        parsers["MESSAGE_CREATE"] = lean_parse


def _touch_channel(state: Any, data: dict[str, Any]) -> None:
    """Keep ``channel.last_message_id`` current for a message that was not parsed (as discord.py would)."""
    try:
        guild = state._get_guild(int(data["guild_id"])) if data.get("guild_id") else None
        if guild is None:
            return
        channel = guild.get_channel_or_thread(int(data["channel_id"]))
        if channel is not None and hasattr(channel, "last_message_id"):
            channel.last_message_id = int(data["id"])
    except (KeyError, TypeError, ValueError):
        return
