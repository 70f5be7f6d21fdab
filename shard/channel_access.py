"""Where the bot may post: what discord.py's cache says, and which targets refused it recently.

Every 403 Discord answers counts toward its invalid-request ban (10,000 per 10 minutes per IP),
so the bot asks before it posts where it can. :func:`bot_can_post` reads the bot's permissions in
a channel from discord.py's cache (no request). :class:`RefusedTargets` remembers, for a while,
the channels and DMs that answered 403 (or 404), so that many reminders due for one channel earn
one refusal, not one each.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Literal

import discord

__all__ = ("bot_can_post", "RefusedTargets", "TargetKind")

#: A channel of a server, or a user's DMs (keyed by the user's id).
TargetKind = Literal["channel", "dm"]


def bot_can_post(channel: object) -> bool | None:
    """Whether the bot may post in ``channel`` by discord.py's cache: View Channel and Send Messages
    (Send Messages in Threads in a thread); always True in DMs.

    Returns None when the cache cannot tell (a partial channel, a thread whose parent is not cached,
    the bot's own member missing).
    """
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return True
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return None
    me = channel.guild.me
    if me is None:
        return None
    try:
        perms = channel.permissions_for(me)
    except discord.ClientException:  # a thread whose parent channel is not cached
        return None
    if isinstance(channel, discord.Thread):
        return perms.view_channel and perms.send_messages_in_threads
    return perms.view_channel and perms.send_messages


class RefusedTargets:
    """Channels and DMs that refused the bot recently, with why; per process, bounded, expiring.

    Parameters
    ----------
    ttl:
        Seconds a refusal is remembered.
    max_size:
        Targets remembered at most; the oldest go first.
    clock:
        Monotonic seconds (tests pass a fake).
    """

    __slots__ = ("ttl", "max_size", "_clock", "_entries")

    def __init__(self, *, ttl: float = 900.0, max_size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or max_size < 1:
            raise ValueError("RefusedTargets needs ttl > 0 and max_size >= 1")
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._entries: collections.OrderedDict[tuple[TargetKind, int], tuple[float, str]] = collections.OrderedDict()

    def add(self, kind: TargetKind, target_id: int, reason: str) -> None:
        """Remember that ``target_id`` refused the bot, for ``ttl`` seconds from now."""
        key = (kind, target_id)
        now = self._clock()
        entries = self._entries
        entries.pop(key, None)
        # one ttl for all: the oldest entry expires first
        while entries and (len(entries) >= self.max_size or next(iter(entries.values()))[0] <= now):
            entries.popitem(last=False)
        entries[key] = (now + self.ttl, reason)

    def get(self, kind: TargetKind, target_id: int) -> str | None:
        """Why ``target_id`` refused the bot, while that is remembered; otherwise None."""
        key = (kind, target_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)
