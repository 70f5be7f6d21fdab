"""Who repeated what, per guild, in bounded memory: :class:`RepeatTracker`.

Each guild has *copy counters*, one per (author, normalised text)
(:func:`~shard.automod.rules.repeat_key`): the window's start alone while there is one copy (nearly
every message is the only one of its text: a float is smaller than a tuple, and the garbage
collector never tracks it), then ``(window start, copies)``. A counter's window lasts the rule's
``window_s``; a counter that caught a repeat restarts its window at every further copy, so a
spammer who keeps going keeps being caught.

The counters live in two generations of plain dictionaries per guild, the current one and the one
before: a counter is looked up in the current one, then the previous one (and carried over when
still in its window), and every ``window_s`` the previous generation is dropped whole and the
current one takes its place. A counter is therefore kept for one to two windows, which is all the
rule needs, and expiring costs nothing per message (no per-counter ordering to keep up: the
generations are plain dicts, about half the cost of an ordered table at a busy cluster's sizes).

Memory is bounded three ways and comes back after a burst:

* **TTL**: generations turn over as above, and :meth:`RepeatTracker.sweep` (run by the automod
  service every few seconds) turns over or forgets guilds that went quiet, so the space a burst
  took is released without further messages;
* **per guild**: at most ``per_guild`` counters; a raid of distinct messages turns the guild's
  generations over early, dropping its older half;
* **in all**: at most ``max_entries`` counters; past it, guilds are forgotten oldest first, those
  active within the window passed over once (a "second chance", so no per-message reordering is
  needed), down to :data:`TRIM_TO` of the cap (a busy cluster keeps its tracker full: at
  10,000 messages a second in guilds at ``high``, one window holds 100,000 counters).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from .rules import MAX_REPEAT_WINDOW_S, RepeatRule

__all__ = ("RepeatTracker", "TRIM_TO")

#: Past ``max_entries``, guilds are forgotten until the counters fit in this share of it.
TRIM_TO = 0.9

#: key → window start (one copy so far) or (window start, copies)
_Counters = dict[int, "float | tuple[float, int]"]


class _Guild:
    """One guild's two generations of counters."""

    __slots__ = ("current", "previous", "turn_at", "last")

    def __init__(self, now: float, window_s: float) -> None:
        self.current: _Counters = {}
        self.previous: _Counters = {}
        self.turn_at = now + window_s
        self.last = now

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)


class RepeatTracker:
    """Copy counters per guild (see the module docstring).

    Parameters
    ----------
    per_guild:
        Counters kept per guild at most (both generations).
    max_entries:
        Counters kept in all at most.
    clock:
        Monotonic seconds (tests pass a fake).
    """

    __slots__ = ("per_guild", "max_entries", "_clock", "_guilds", "_size", "_peak_guilds")

    def __init__(self, *, per_guild: int = 1000, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_guild < 2 or max_entries < 1:
            raise ValueError("RepeatTracker needs per_guild >= 2 and max_entries >= 1")
        self.per_guild = per_guild
        self.max_entries = max_entries
        self._clock = clock
        #: in order of arrival; eviction gives recently active guilds a second chance (CLOCK), so no
        #: per-message reordering is needed
        self._guilds: collections.OrderedDict[int, _Guild] = collections.OrderedDict()
        self._size = 0
        self._peak_guilds = 0

    def __len__(self) -> int:
        """Counters held now (a counter carried into the current generation counts twice until the turn)."""
        return self._size

    @property
    def guilds(self) -> int:
        """Guilds with counters now."""
        return len(self._guilds)

    def count(self, guild_id: int, key: int, rule: RepeatRule) -> int:
        """Count one message with ``key`` in ``guild_id``; returns its copies within the window (1: the first)."""
        now = self._clock()
        window = rule.window_s
        guilds = self._guilds
        guild = guilds.get(guild_id)
        if guild is None:
            guild = guilds[guild_id] = _Guild(now, window)
            if len(guilds) > self._peak_guilds:
                self._peak_guilds = len(guilds)
        elif now >= guild.turn_at:
            self._turn(guild, now, window)
        guild.last = now
        current = guild.current
        counter = current.get(key)
        if counter is None:
            counter = guild.previous.get(key) if guild.previous else None
            if counter is None or (counter if isinstance(counter, float) else counter[0]) <= now - window:
                current[key] = now
                self._size += 1
                if len(current) * 2 > self.per_guild or self._size > self.max_entries:
                    self._trim(guild, now, window)
                return 1
            self._size += 1  # carried over from the previous generation
        if isinstance(counter, float):
            start, copies = counter, 2
        else:
            start, copies = counter
            copies += 1
        if start <= now - window:  # expired: a fresh window
            current[key] = now
            return 1
        current[key] = (now, copies) if copies >= rule.copies else (start, copies)  # caught: the window follows
        return copies

    def _turn(self, guild: _Guild, now: float, window: float) -> None:
        """The previous generation goes, the current one becomes it."""
        self._size -= len(guild.previous)
        guild.previous = guild.current
        guild.current = {}
        guild.turn_at = now + window

    def _trim(self, guild: _Guild, now: float, window: float) -> None:
        """Back under the caps after ``guild`` grew (see the module docstring)."""
        if len(guild.current) * 2 > self.per_guild:
            self._turn(guild, now, window)  # a raid: its older half goes early
        if self._size <= self.max_entries:
            return
        target = int(self.max_entries * TRIM_TO)
        guilds = self._guilds
        recent = now - window
        chances = len(guilds)  # passes over at most one round of guilds: then every other one can go
        while self._size > target and len(guilds) > 1:
            guild_id, other = guilds.popitem(last=False)
            if other is guild or (chances > 0 and other.last > recent):
                guilds[guild_id] = other  # the guild that grew, or one active within the window: a second chance
                chances -= 1
            else:
                self._size -= len(other)
        if self._size > target:  # one guild holds it all: its older generation goes
            self._turn(guild, now, window)

    def sweep(self, window_s: float = MAX_REPEAT_WINDOW_S) -> int:
        """Turn over the generations due, and forget guilds quiet for ``window_s``; returns the counters dropped.

        Run every few seconds, so the memory a burst took comes back without further messages.
        """
        now = self._clock()
        before = self._size
        guilds = self._guilds
        for guild_id in list(guilds):
            guild = guilds[guild_id]
            if guild.last <= now - window_s:
                self._size -= len(guild)
                del guilds[guild_id]
            elif now >= guild.turn_at:
                self._turn(guild, now, window_s)
        if len(guilds) * 2 < self._peak_guilds:
            self._guilds = collections.OrderedDict(guilds)  # a smaller table
            self._peak_guilds = len(guilds)
        return before - self._size

    def clear(self) -> None:
        self._guilds = collections.OrderedDict()
        self._size = 0
        self._peak_guilds = 0
