"""Automod for one cluster process: :class:`Automod`, the per-message check and the service that acts.

Where it runs, and what it costs
--------------------------------
Every MESSAGE_CREATE passes :class:`~shard.lean_messages.LeanMessages` first, which reads the
guild's fresh local configuration (:meth:`~shard.pipeline.store.GuildConfigStore.cached_config`)
for its prefix anyway. With that copy in hand:

* **automod off** (the level is 0): nothing more happens;
* **automod on**: :meth:`Automod.inspect` checks the raw payload in one pass
  (:func:`shard.automod.check.check`: the rules of :mod:`shard.automod.rules`, asked only of a
  text with an ``@`` or a ``/`` or a message with mentions, and the copy counter of
  :class:`~shard.automod.repeats.RepeatTracker` at medium and high), building no discord.py
  object; a clean message stops there;
* **no fresh copy**: the message takes discord.py's full path, whose prefix lookup loads the
  configuration (:class:`~shard.pipeline.prefixes.PrefixResolver`). :meth:`Automod.defer` queues the
  raw payload per guild meanwhile (bounded: :data:`MAX_DEFERRED` in all), and the resolver hands
  the loaded configuration to :meth:`Automod.resume`, which inspects the guild's queue in arrival
  order. A message of that guild inspected on the fast path before then (the configuration got
  cached in between) first inspects the queue with that same fresh copy, so the order of a guild's
  messages is kept (it decides which copy of a repeat is the third). A message is therefore
  inspected exactly once, on one path or the other; when the configuration cannot be loaded at all
  (a guild this process never read, with PostgreSQL down) its queued messages are not inspected.

A message that breaks a rule goes on to :func:`~shard.automod.enforcement.judge` (is the author
exempt?), then to the action: the delete or, where the bot may not delete, a ``flag``. Deletes
run in the background, one at a time per channel (Discord limits deletes per channel anyway), so
that the first 403 in a channel turns the channel's queued deletes into flags instead of more
403s; at most ``max_pending`` wait in all. Each finished action counts in
``innkeeper_automod_actions_total{rule,action}`` and goes to the
:class:`~shard.automod.incidents.IncidentLog` (one notice and a few audit rows per guild per
window). Bots' messages (the bot's own included) are never inspected.

Nothing here may raise into discord.py's parser: a failing check is logged once and counted
(``innkeeper_automod_failures_total{stage="inspect"}``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from innkeeper.services import BackgroundTasks

from .check import check
from .enforcement import EXEMPT, MessageRemover, NoticePoster, judge
from .incidents import Incident, IncidentLog
from .metrics import EXEMPT as EXEMPT_TOTAL
from .metrics import action_counter, dropped, failure
from .repeats import RepeatTracker
from .rules import LEVELS, RULE_LABELS

if TYPE_CHECKING:
    import discord

    from ..channel_access import RefusedTargets
    from ..pipeline.config import GuildConfig
    from ..pipeline.events import AuditSink

__all__ = ("Automod", "MAX_DEFERRED")

_log = logging.getLogger(__name__)

#: Messages kept while their guild's configuration loads, at most (the oldest go first).
MAX_DEFERRED = 5000
_LEVEL_COUNT = len(LEVELS)


class Automod:
    """Automod of one cluster (see the module docstring).

    Parameters
    ----------
    client:
        The bot: its cache (guilds, channels, its own member) and its HTTP client.
    audit:
        Where audit rows go (the pipeline's :class:`~shard.pipeline.sinks.AuditToDatabase`).
    refused:
        Channels that refused the bot's posts recently (shared with reminders and private answers).
    owner_ids:
        ``INNKEEPER_OWNER_IDS`` (bot owners are exempt, as for commands).
    log_window_s:
        ``INNKEEPER_AUTOMOD_LOG_WINDOW``: seconds a guild's incidents are gathered into one notice.
    repeats:
        The copy counters (a default :class:`~shard.automod.repeats.RepeatTracker` when None).
    max_pending:
        Deletes waiting or running at most; past it an incident is ``failed`` without a request.
    sweep_s:
        Seconds between sweeps of expired copy counters.
    """

    __slots__ = ("client", "owner_ids", "repeats", "remover", "log", "max_pending", "sweep_s", "_deferred",
                 "_deferred_count", "_deletes", "_sweeper", "_pending", "_queues", "_warned")

    def __init__(self, client: discord.Client, *, audit: AuditSink, refused: RefusedTargets,
                 owner_ids: frozenset[int] = frozenset(), log_window_s: float = 10.0,
                 repeats: RepeatTracker | None = None, max_pending: int = 1000, sweep_s: float = 5.0) -> None:
        self.client = client
        self.owner_ids = owner_ids
        self.repeats = repeats or RepeatTracker()
        self.remover = MessageRemover(client)
        self.log = IncidentLog(post=NoticePoster(client, refused=refused), audit=audit, actor_id=self._me,
                               window_s=log_window_s)
        self.max_pending = max_pending
        self.sweep_s = sweep_s
        #: guild → its messages waiting for its configuration, oldest first
        self._deferred: dict[int, collections.deque[dict[str, Any]]] = {}
        self._deferred_count = 0
        self._deletes = BackgroundTasks("automod")
        self._sweeper = BackgroundTasks("automod-sweep")
        self._pending = 0
        #: channel → its queued deletes (one task per channel drains it)
        self._queues: dict[int, collections.deque[Incident]] = {}
        self._warned = False

    def _me(self) -> int | None:
        user = self.client.user
        return user.id if user is not None else None

    # --- per message, inside discord.py's parser ------------------------------------------------------
    def inspect(self, data: dict[str, Any], cfg: GuildConfig) -> None:
        """Check one raw message of a guild whose automod is on; act when it breaks a rule. Never raises."""
        if self._deferred and cfg.guild_id in self._deferred:
            self.resume(cfg.guild_id, cfg)  # earlier messages of the guild waited for this configuration
        level = cfg.automod_level
        rules = LEVELS[level] if 0 < level < _LEVEL_COUNT else None
        if rules is None:
            return
        try:
            content = data.get("content")
            if not content or not isinstance(content, str):
                return
            found = check(data, content, cfg.guild_id, rules, self.repeats)
            if found:
                self._act(data, cfg, found)
        except Exception:
            failure("inspect").inc()
            if not self._warned:
                self._warned = True
                _log.exception("automod failed on a message (logged once; counted in "
                               "innkeeper_automod_failures_total)")

    def defer(self, data: dict[str, Any]) -> None:
        """Queue a guild message whose configuration is not cached, until :meth:`resume` gets it."""
        try:
            guild_id = int(data["guild_id"])
        except (KeyError, TypeError, ValueError):
            return
        deferred = self._deferred
        queue = deferred.get(guild_id)
        if queue is None:
            queue = deferred[guild_id] = collections.deque()
        queue.append(data)
        self._deferred_count += 1
        while self._deferred_count > MAX_DEFERRED:  # the oldest guild's oldest message goes
            oldest_guild, oldest = next(iter(deferred.items()))
            oldest.popleft()
            self._deferred_count -= 1
            dropped("deferred").inc()
            if not oldest:
                del deferred[oldest_guild]

    def _take(self, guild_id: int) -> collections.deque[dict[str, Any]] | None:
        queue = self._deferred.pop(guild_id, None)
        if queue is not None:
            self._deferred_count -= len(queue)
        return queue

    def resume(self, guild_id: int, cfg: GuildConfig | None) -> None:
        """The full path read a guild's configuration (None: it could not): inspect its queued messages."""
        if not self._deferred:
            return
        queued = self._take(guild_id)
        if queued and cfg is not None and cfg.automod_level:
            for data in queued:
                self.inspect(data, cfg)

    # --- acting -----------------------------------------------------------------------------------------
    def _act(self, data: dict[str, Any], cfg: GuildConfig, found: tuple[str, ...]) -> None:
        guild = self.client.get_guild(cfg.guild_id)
        if guild is None:
            return
        channel_id = int(data["channel_id"])
        channel = guild.get_channel_or_thread(channel_id)
        rule = judge(guild, channel, data, cfg, found, owner_ids=self.owner_ids)
        if rule is None:
            return
        if rule == EXEMPT:
            EXEMPT_TOTAL.inc()
            return
        incident = Incident(guild_id=cfg.guild_id, channel_id=channel_id, message_id=int(data["id"]),
                            author_id=int(data["author"]["id"]), rule=rule, action="failed",
                            log_channel_id=cfg.log_channel_id)
        if self.remover.known_refusal(guild, channel, channel_id):
            self._done(incident, "flag")
            return
        if self._pending >= self.max_pending:
            dropped("deletes").inc()
            self._done(incident, "failed")
            return
        self._pending += 1
        queue = self._queues.get(channel_id)
        if queue is not None:
            queue.append(incident)
            return
        queue = self._queues[channel_id] = collections.deque((incident,))
        self._deletes.spawn(self._drain(channel_id, queue), name="delete")

    async def _drain(self, channel_id: int, queue: collections.deque[Incident]) -> None:
        """Delete a channel's queued messages one at a time: after a 403 the rest are only flagged."""
        try:
            while queue:
                incident = queue.popleft()
                action = "flag" if self.remover.refused.get("channel", channel_id) is not None else "failed"
                try:
                    if action != "flag":
                        action = await self.remover.delete(channel_id, incident.message_id,
                                                           f"automod: {RULE_LABELS[incident.rule]}")
                finally:
                    self._pending -= 1
                    self._done(incident, action)
        finally:
            if self._queues.get(channel_id) is queue:
                del self._queues[channel_id]
            while queue:  # cancelled at shutdown: what was not tried is logged as not deleted
                self._pending -= 1
                self._done(queue.popleft(), "failed")

    def _done(self, incident: Incident, action: str) -> None:
        action_counter(incident.rule, action).inc()
        self.log.add(dataclasses.replace(incident, action=action))

    # --- service ------------------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        self.repeats.sweep()

    async def start(self) -> None:
        if not len(self._sweeper):
            self._sweeper.every(self.sweep_s, self._sweep, name="sweep", run_first=False)

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Let running deletes finish (up to ``grace_s``), write the open windows out, stop sweeping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._deletes.wait()
        await self._deletes.cancel()
        await self.log.close()
        await self._sweeper.cancel()
        self._deferred.clear()
        self._deferred_count = 0
