"""Which sessions get an event, as Discord routes it: every live session whose shard covers it.

``developers/events/gateway.mdx`` ("Sharding"): a guild's events go to shard
``(guild_id >> 22) % num_shards``, and ``num_shards`` "is only used for *routing* traffic": "You can
establish multiple sessions with the same ``[shard_id, num_shards]``, or sessions with different
``num_shards`` values", which is how a deployment hands traffic to a new one of another shard count.
So every live session whose ``(shard_id, shard_count)`` covers the guild gets the event: one per
shard normally, two or more while generations overlap. DMs and other events without a guild go to
shard 0 of every shard count.

When no live session covers the guild, the newest resumable session that does (newest shard count
first) buffers the event for its RESUME; when there is none the event is lost at once
(``lost_unrouted``). A copy that went to a session whose socket is not writable (silent, closing)
while another session's writable socket got the same event is marked ``elsewhere``: if that copy is
never written, the bot still got the event, and the copy does not count as lost.

Each session gets only what its intents allow (``intent_filtered`` counts the copies held back), and
without MESSAGE_CONTENT a guild message's content fields go out empty (:mod:`simulator.intents`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .intents import MESSAGE_EVENTS, SELF_EVENTS, Intent, allows, allows_dispatch, strip_content
from .jsontext import dumps

if TYPE_CHECKING:
    from .sessions import Session, SessionTable
    from .state import Stats

__all__ = ("Router",)


class Router:
    """Routes guild and shard events to sessions; its lookups are cached until :meth:`changed`.

    Parameters
    ----------
    sessions:
        The gateway's session table.
    stats:
        The simulator's counters (``lost``, ``lost_unrouted``, ``intent_filtered``).
    bot_id:
        The bot's user id (its own messages and member updates cross the intents).
    """

    __slots__ = ("sessions", "stats", "bot_id", "_live", "_counts")

    def __init__(self, sessions: SessionTable, stats: Stats, bot_id: int) -> None:
        self.sessions = sessions
        self.stats = stats
        self.bot_id = bot_id
        self._live: list[tuple[int, dict[int, list[Session]]]] | None = None
        self._counts: list[int] | None = None

    def changed(self) -> None:
        """A session was attached, detached or ended: recompute the lookups when next needed."""
        self._live = self._counts = None

    # -- lookups ---------------------------------------------------------------------------------

    def guild_targets(self, guild_id: int) -> list[Session]:
        """Every live session covering the guild, else the newest resumable one, else nothing."""
        routes = self._live
        if routes is None:
            routes = self._live = self.sessions.live_routes()
        ts = guild_id >> 22
        found: list[Session] | None = None
        for count, by_shard in routes:
            group = by_shard.get(ts % count)
            if group:
                found = group if found is None else found + group
        if found:
            return found
        target = self._resumable(lambda count: ts % count)
        return [target] if target is not None else []

    def shard_targets(self, shard_id: int) -> list[Session]:
        """Every live session of ``shard_id`` (any shard count), else the newest resumable one, else nothing."""
        live = self.sessions.live_for_shard(shard_id)
        if live:
            return live
        target = self._resumable(lambda count: shard_id if shard_id < count else None)
        return [target] if target is not None else []

    def _resumable(self, shard_of: Callable[[int], int | None]) -> Session | None:
        counts = self._counts
        if counts is None:
            counts = self._counts = self.sessions.counts_newest_first()
        for count in counts:
            shard = shard_of(count)
            target = self.sessions.target(count, shard) if shard is not None else None
            if target is not None:
                return target
        return None

    # -- dispatching -----------------------------------------------------------------------------

    def _unrouted(self) -> None:
        self.stats.lost += 1
        self.stats.lost_unrouted += 1

    def dispatch_guild(self, guild_id: int, event: str, data: dict[str, Any]) -> bool:
        """Send a guild event to :meth:`guild_targets`; False when no session took it."""
        targets = self.guild_targets(guild_id)
        if not targets:
            self._unrouted()
            return False
        bot_id = self.bot_id
        takers = []
        for s in targets:
            if allows_dispatch(s.intents, event, data, in_guild=True, bot_id=bot_id):
                takers.append(s)
            else:
                self.stats.intent_filtered += 1
        if not takers:
            return False
        full: str | None = None
        stripped: str | None = None
        strips = event in MESSAGE_EVENTS

        def render(s: Session) -> str:
            nonlocal full, stripped
            if strips and not s.intents & Intent.MESSAGE_CONTENT:
                if stripped is None:
                    stripped = dumps(strip_content(data, bot_id))
                return stripped
            if full is None:
                full = dumps(data)
            return full

        self._fan_out(takers, event, render)
        return True

    def dispatch_guild_json(self, guild_id: int, event: str, d_json: str) -> bool:
        """:meth:`dispatch_guild` for a ``d`` that is already JSON text (load generators serialise once)."""
        targets = self.guild_targets(guild_id)
        if not targets:
            self._unrouted()
            return False
        bot_id = self.bot_id
        takers = []
        for s in targets:
            if allows(s.intents, event, in_guild=True) or (
                    event in SELF_EVENTS and allows_dispatch(s.intents, event, json.loads(d_json), in_guild=True,
                                                             bot_id=bot_id)):
                takers.append(s)
            else:
                self.stats.intent_filtered += 1
        if not takers:
            return False
        stripped: str | None = None
        strips = event in MESSAGE_EVENTS

        def render(s: Session) -> str:
            nonlocal stripped
            if strips and not s.intents & Intent.MESSAGE_CONTENT:
                if stripped is None:
                    data = json.loads(d_json)
                    without = strip_content(data, bot_id)
                    stripped = d_json if without is data else dumps(without)
                return stripped
            return d_json

        self._fan_out(takers, event, render)
        return True

    def dispatch_shard(self, shard_id: int, event: str, data: dict[str, Any]) -> int:
        """Send an event to :meth:`shard_targets`; returns how many sessions took it.

        Without a ``guild_id`` in ``data`` the event counts as a DM event for the intents check.
        """
        targets = self.shard_targets(shard_id)
        if not targets:
            self._unrouted()
            return 0
        in_guild = "guild_id" in data
        takers = []
        for s in targets:
            if allows_dispatch(s.intents, event, data, in_guild=in_guild, bot_id=self.bot_id):
                takers.append(s)
            else:
                self.stats.intent_filtered += 1
        if takers:
            d_json = dumps(data)
            self._fan_out(takers, event, lambda _s: d_json)
        return len(takers)

    @staticmethod
    def _fan_out(takers: list[Session], event: str, render: Callable[[Session], str]) -> None:
        if len(takers) == 1:
            takers[0].push(event, render(takers[0]))
            return
        covered = any(s.writable for s in takers)
        for s in takers:
            s.push(event, render(s), covered and not s.writable)
