"""Who repeated what, per guild, in bounded memory: :class:`RepeatTracker`.

Each guild has an ordered table of *copy counters*, one per (author, normalised text)
(:func:`~shard.automod.rules.repeat_key`): ``[window start, copies]``, oldest window first. A
counter lives for the rule's window; a counter that caught a repeat restarts its window at every
further copy, so a spammer who keeps going keeps being caught.

Memory is bounded three ways and comes back after a burst:

* **TTL**: a guild's expired counters are dropped at its next message (they are at the front),
  and :meth:`RepeatTracker.sweep` (run by the automod service every few seconds) drops every
  expired counter, forgets guilds left empty, and rebuilds tables that shrank, so the space a
  burst took is released even in a guild that went quiet;
* **per guild**: at most ``per_guild`` counters; a raid of distinct messages pushes out the oldest;
* **in all**: at most ``max_entries`` counters; past it, the least recently active guilds lose
  their oldest counters first.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from .rules import MAX_REPEAT_WINDOW_S, RepeatRule

__all__ = ("RepeatTracker",)

_Counters = collections.OrderedDict[int, list[float]]


class RepeatTracker:
    """Copy counters per guild (see the module docstring).

    Parameters
    ----------
    per_guild:
        Counters kept per guild at most.
    max_entries:
        Counters kept in all at most.
    clock:
        Monotonic seconds (tests pass a fake).
    """

    __slots__ = ("per_guild", "max_entries", "_clock", "_guilds", "_size", "_peak_guilds")

    def __init__(self, *, per_guild: int = 1000, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_guild < 1 or max_entries < 1:
            raise ValueError("RepeatTracker needs per_guild >= 1 and max_entries >= 1")
        self.per_guild = per_guild
        self.max_entries = max_entries
        self._clock = clock
        self._guilds: collections.OrderedDict[int, _Counters] = collections.OrderedDict()
        self._size = 0
        self._peak_guilds = 0

    def __len__(self) -> int:
        """Counters held now."""
        return self._size

    @property
    def guilds(self) -> int:
        """Guilds with counters now."""
        return len(self._guilds)

    def count(self, guild_id: int, key: int, rule: RepeatRule) -> int:
        """Count one message with ``key`` in ``guild_id``; returns its copies within the window (1: the first)."""
        now = self._clock()
        guilds = self._guilds
        counters = guilds.get(guild_id)
        if counters is None:
            counters = guilds[guild_id] = collections.OrderedDict()
            if len(guilds) > self._peak_guilds:
                self._peak_guilds = len(guilds)
        else:
            guilds.move_to_end(guild_id)
            horizon = now - rule.window_s
            while counters:
                oldest = next(iter(counters.values()))
                if oldest[0] > horizon:
                    break
                counters.popitem(last=False)
                self._size -= 1
        counter = counters.get(key)
        if counter is None:
            counters[key] = [now, 1]
            self._size += 1
            if len(counters) > self.per_guild:
                counters.popitem(last=False)
                self._size -= 1
            if self._size > self.max_entries:
                self._evict()
            return 1
        copies = int(counter[1]) + 1
        counter[1] = copies
        if copies >= rule.copies:  # caught: the window follows the spam
            counter[0] = now
            counters.move_to_end(key)
        return copies

    def _evict(self) -> None:
        """Drop the oldest counters of the least recently active guilds until the total fits."""
        guilds = self._guilds
        while self._size > self.max_entries and guilds:
            guild_id, counters = next(iter(guilds.items()))
            counters.popitem(last=False)
            self._size -= 1
            if not counters:
                del guilds[guild_id]

    def sweep(self, window_s: float = MAX_REPEAT_WINDOW_S) -> int:
        """Drop every counter whose window ended ``window_s`` ago or more; returns how many went.

        Guilds left without counters are forgotten, and tables that shrank are rebuilt, so the
        memory a burst took comes back.
        """
        horizon = self._clock() - window_s
        dropped = 0
        guilds = self._guilds
        for guild_id in list(guilds):
            counters = guilds[guild_id]
            before = len(counters)
            while counters and next(iter(counters.values()))[0] <= horizon:
                counters.popitem(last=False)
            gone = before - len(counters)
            dropped += gone
            if not counters:
                del guilds[guild_id]
            elif gone > len(counters):
                guilds[guild_id] = collections.OrderedDict(counters)  # a smaller table
        self._size -= dropped
        if len(guilds) * 2 < self._peak_guilds:
            self._guilds = collections.OrderedDict(guilds)
            self._peak_guilds = len(guilds)
        return dropped

    def clear(self) -> None:
        self._guilds = collections.OrderedDict()
        self._size = 0
        self._peak_guilds = 0
