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

**Waiting for a guild's configuration without piling up.** When a guild's configuration is not held
here (a cold start, a guild that was quiet for a while), the verdict needs a load. Parsed in full,
each of that guild's messages would become a ``Message``, its author a ``Member``, and its
``on_message`` a task waiting on the same load: a burst over cold guilds left thousands of them
alive at once (about 9 KiB each, 2,000 in 18 MiB of Python heap at the peak of ``bench memory``'s
burst), and CPython keeps most of that high-water mark resident afterwards. Instead the filter
*parks* the raw payloads of a guild whose configuration is unknown, in arrival order, queues one
load for the guild (``max_loads``, 16, run at once: more would only wait on the database pool, as
tasks), and decides on each parked message once the load ends (a failed load sends them all down
the full path, which answers the failure as before). The verdict is the same; only its
time changes, and a guild's messages keep their order (a message of a parked guild waits behind
the parked ones). At most ``max_parked`` (2,000) payloads wait in the whole process: past that, the guild
whose message found the queue full is released at once, in order, through the full path (the
behaviour without parking), so nothing is lost.

**Backpressure.** The queue's bound alone would only move a long burst over cold guilds back to the
full path once the queue is full (20,000 messages over 2,000 cold guilds grew the RSS by 167 MiB in
``bench memory``), so the queue is one of the counters the cluster's :class:`~shard.read_gate.ReadGate`
watches: while it is full, the shards stop reading their gateway socket for a moment.

Automod (:mod:`shard.automod`) is the per-message feature that needs more than the prefix: the
same fresh local copy gives the guild's automod level, so a guild with automod off pays nothing
more; with automod on, :meth:`MessageInspector.inspect` checks the raw payload before the command
decision, whatever that decision is. When there is no fresh copy, the payload is handed to
parked with the rest and inspected when it is released; a message that cannot be parked (the queue
is full, or the load failed) is handed to :meth:`MessageInspector.defer` and takes the full path,
whose prefix lookup loads the configuration and hands it back to automod
(:class:`~shard.pipeline.prefixes.PrefixResolver`): each message is inspected exactly once. Bots'
messages and messages without text are never inspected.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter, Gauge

from innkeeper.errors import InnkeeperError
from innkeeper.services import BackgroundTasks

from .event_guard import event_failed, shard_of
from .read_gate import Bounded

if TYPE_CHECKING:
    from discord.ext import commands

    from .pipeline.config import GuildConfig
    from .pipeline.store import GuildConfigStore

__all__ = ("LeanMessages", "MessageInspector", "SKIPPED", "PARKED", "PARK_OVERFLOWS")

_log = logging.getLogger(__name__)

#: Messages dropped before discord.py parsed them (they could not invoke a command).
SKIPPED = Counter("innkeeper_messages_skipped", "MESSAGE_CREATEs that could not invoke a command, left unparsed")
#: Raw MESSAGE_CREATEs waiting for their guild's configuration to load.
PARKED = Gauge("innkeeper_messages_parked", "MESSAGE_CREATEs waiting, unparsed, for their guild's configuration")
#: Times the parking queue was full and a guild's messages took the full path at once.
PARK_OVERFLOWS = Counter("innkeeper_messages_park_overflows",
                         "Times the parked-message queue was full and a guild's messages were parsed at once")


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
    max_parked:
        The most raw payloads waiting for their guild's configuration in the process (0: never park).
    max_loads:
        Parked guilds whose configuration loads at once.
    """

    __slots__ = ("default_prefix", "config", "automod", "max_parked", "max_loads", "skipped", "queue", "_parked",
                 "_to_load", "_loaders", "_tasks", "_parse", "_state", "_stopped")

    def __init__(self, default_prefix: str, config: GuildConfigStore, automod: MessageInspector | None = None, *,
                 max_parked: int = 2000, max_loads: int = 16) -> None:
        if max_parked < 0 or max_loads < 1:
            raise ValueError("max_parked must be 0 or more, max_loads 1 or more")
        self.default_prefix = default_prefix
        self.config = config
        self.automod = automod
        #: The most raw payloads waiting for their guild's configuration, in the whole process (0: never park).
        self.max_parked = max_parked
        #: Parked guilds whose configuration loads at once; the others wait their turn in ``_to_load``.
        self.max_loads = max_loads
        #: Messages dropped so far by this filter.
        self.skipped = 0
        #: guild id (as in the payload) → its parked payloads, in arrival order
        self._parked: dict[str, list[dict[str, Any]]] = {}
        #: How many payloads are parked (the read gate watches it; full at ``max_parked``).
        self.queue = Bounded("parked_messages", max_parked)
        self._to_load: collections.deque[str] = collections.deque()
        self._loaders = 0
        self._tasks = BackgroundTasks("lean-messages")
        self._parse: Callable[[Any], None] | None = None
        self._state: Any = None
        self._stopped = False

    def verdict(self, data: dict[str, Any]) -> bool | None:
        """Whether the message could invoke a command: ``True`` (parse it), ``False`` (it cannot), or
        ``None`` when only a load of its guild's configuration, which this process does not hold, can tell.

        Only decides; :meth:`route` also runs automod."""
        return self._decide(data, None)

    def route(self, data: dict[str, Any]) -> bool:
        """Run automod on the message where it applies (or hand it over to wait for its guild's configuration),
        then say whether it must be parsed now (:meth:`needed`), without parking it."""
        verdict = self._decide(data, self.automod)
        if verdict is None and self.automod is not None:
            self.automod.defer(data)  # the full path loads the configuration and hands it back
        return verdict is not False

    def _decide(self, data: dict[str, Any], automod: MessageInspector | None) -> bool | None:
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
            return None
        if automod is not None and cfg.automod_level:
            automod.inspect(data, cfg)
        if content.startswith("<@"):
            return True  # a leading mention may be the bot's (when_mentioned_or)
        return content.startswith(cfg.prefix or self.default_prefix)

    def needed(self, data: dict[str, Any]) -> bool:
        """Whether the message must be parsed now (it could invoke a command, or only a load could tell)."""
        return self.verdict(data) is not False

    @property
    def parked(self) -> int:
        """Payloads waiting for their guild's configuration now."""
        return self.queue.count

    def install(self, bot: commands.AutoShardedBot) -> None:
        """Wrap discord.py's MESSAGE_CREATE parser of ``bot`` (before anything else wraps it)."""
        state = getattr(bot, "_connection", None)
        parsers: dict[str, Callable[[Any], None]] | None = getattr(state, "parsers", None)
        if state is None or parsers is None or "MESSAGE_CREATE" not in parsers:
            _log.warning("discord.py has no MESSAGE_CREATE parser here: every message is parsed in full")
            return
        self._state, self._parse = state, parsers["MESSAGE_CREATE"]
        parsers["MESSAGE_CREATE"] = self.on_message

    def on_message(self, data: Any) -> None:
        """The wrapped parser: drop, park or parse one MESSAGE_CREATE payload (never raises but what discord.py's
        own parser raises)."""
        raw = data.get("guild_id") if isinstance(data, dict) else None
        guild = raw if isinstance(raw, str) else None  # ids travel as strings
        waiting = self._parked.get(guild) if guild is not None else None
        if waiting is not None and guild is not None:  # the guild's earlier messages wait: this one goes behind
            if self.queue.count < self.max_parked:
                waiting.append(data)
                self.queue.add()
                PARKED.inc()
                return
            PARK_OVERFLOWS.inc()
            self._release(guild)  # full: the guild's messages take the full path now, in order
        verdict = self._decide(data, self.automod) if isinstance(data, dict) else True
        if verdict is None and guild is not None and not self._stopped and self.queue.count < self.max_parked:
            self._parked[guild] = [data]
            self.queue.add()
            PARKED.inc()
            self._to_load.append(guild)
            if self._loaders < self.max_loads:
                self._loaders += 1
                self._tasks.spawn(self._loader(), name="load")
            return
        if verdict is False:
            self._skip(data)
            return
        if verdict is None and self.automod is not None:
            self.automod.defer(data)  # not parked: the full path's load hands the configuration to automod
        self._parse_now(data)

    def _skip(self, data: dict[str, Any]) -> None:
        self.skipped += 1
        SKIPPED.inc()
        _touch_channel(self._state, data)

    def _parse_now(self, data: Any) -> None:
        assert self._parse is not None
        self._parse(data)

    async def _loader(self) -> None:
        """Load parked guilds' configurations one after the other, while any wait (one of ``max_loads``)."""
        try:
            while self._to_load:
                guild = self._to_load.popleft()
                if guild in self._parked:  # else an overflow released it meanwhile
                    await self._load_then_release(guild)
        finally:
            self._loaders -= 1

    async def _load_then_release(self, guild: str) -> None:
        try:
            await self.config.get(int(guild))  # single flight: the full path would wait on the same load
        except asyncio.CancelledError:
            self._drop(guild)  # the cluster is stopping
            raise
        except InnkeeperError as exc:  # the full path meets the same failure and answers it as before
            _log.debug("guild %s: configuration load failed (%s); its parked messages take the full path", guild, exc)
        except Exception:  # a bug must not strand the guild's messages
            _log.exception("guild %s: configuration load failed; its parked messages take the full path", guild)
        self._release(guild)

    def _take(self, guild: str) -> list[dict[str, Any]]:
        waiting = self._parked.pop(guild, None) or []
        if waiting:
            self.queue.remove(len(waiting))
            PARKED.dec(len(waiting))
        return waiting

    def _drop(self, guild: str) -> None:
        self._take(guild)

    def _release(self, guild: str) -> None:
        """Decide on the guild's parked messages, in order (parsing those that need it)."""
        for data in self._take(guild):
            try:
                if self.route(data):  # automod sees it now, or on the full path if the load failed
                    self._parse_now(data)
                else:
                    self._skip(data)
            except Exception as exc:  # one bad message must not lose the others (shard/event_guard.py)
                event_failed("MESSAGE_CREATE", "parse", exc,
                             shard_id=shard_of("MESSAGE_CREATE", data, getattr(self._state, "shard_count", None)))

    async def start(self) -> None:
        """Nothing to start: loads are spawned as parked guilds appear."""
        self._stopped = False

    async def stop(self) -> None:
        """Stop parking, and cancel the loads (their parked messages are dropped: the cluster is closing)."""
        self._stopped = True
        await self._tasks.cancel()
        for guild in list(self._parked):
            self._drop(guild)


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
