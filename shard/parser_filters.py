"""Filters in front of discord.py's parsers that exist only while something needs them.

Two parts of a cluster drop raw gateway events for a while: the replay guard (:mod:`shard.replay_guard`,
while a restarted shard's RESUME replays events) and the generation hand-over (:mod:`shard.handover`,
while two generations of clusters overlap during a reshard). Each switches its filter on and off at
any time, independently of the other; :class:`ParserFilters` keeps one chain per event so that one
switching off never removes the other's, and puts discord.py's parser back untouched once no filter
is on: a running cluster pays nothing for filters it does not use.

A filter is ``drop(event, data) -> bool``: True drops the event before it is parsed. Filters sit in
front of every other wrapper (the tracker's included), so they must not raise: one that does is
logged and treated as "keep the event".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from discord.ext import commands

__all__ = ("ParserFilters", "Drop")

_log = logging.getLogger(__name__)

#: ``drop(event, data)``: True drops the raw event before discord.py parses it.
Drop = Callable[[str, Any], bool]


class ParserFilters:
    """Named, switchable filters over the bot's raw event parsers (see the module docstring)."""

    __slots__ = ("_bot", "_base", "_filters")

    def __init__(self) -> None:
        self._bot: commands.AutoShardedBot | None = None
        #: The parser each filtered event had before its first filter went on.
        self._base: dict[str, Callable[[Any], Any]] = {}
        self._filters: dict[str, dict[str, Drop]] = {}

    def install(self, bot: commands.AutoShardedBot) -> None:
        """The bot whose parsers are filtered (once; installing the same bot again is a no-op)."""
        if self._bot is not None and self._bot is not bot:
            raise RuntimeError("these parser filters already belong to another bot")
        self._bot = bot

    @property
    def bot(self) -> commands.AutoShardedBot | None:
        """The bot whose parsers are filtered, once installed."""
        return self._bot

    def active(self, owner: str) -> bool:
        """Whether ``owner`` has a filter on."""
        return any(owner in per for per in self._filters.values())

    def set(self, owner: str, events: Iterable[str], drop: Drop | None) -> None:
        """Put ``owner``'s filter in front of ``events`` (replacing its previous one), or take it out (None)."""
        for event in events:
            per = self._filters.setdefault(event, {})
            if drop is None:
                if per.pop(owner, None) is None:
                    continue
            else:
                per[owner] = drop
            self._rebuild(event)

    def _rebuild(self, event: str) -> None:
        if self._bot is None:
            return
        parsers: dict[str, Callable[[Any], Any]] = self._bot._connection.parsers  # shared with every socket
        drops = tuple(self._filters.get(event, {}).items())
        base = self._base.get(event)
        if not drops:
            if base is not None:
                parsers[event] = base
                del self._base[event]
            return
        if base is None:
            base = self._base[event] = parsers[event]
        parsers[event] = _chain(event, base, drops)


def _chain(event: str, base: Callable[[Any], Any], drops: tuple[tuple[str, Drop], ...]) -> Callable[[Any], Any]:
    def parse(data: Any) -> Any:
        for owner, drop in drops:
            try:
                if drop(event, data):
                    return None
            except Exception:  # never break the gateway reader: keep the event
                _log.exception("the %s filter of %s failed; keeping the event", owner, event)
        return base(data)
    return parse
