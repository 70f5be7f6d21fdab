"""Member and presence traffic in proportion to guild size, for ``POST /_sim/load``.

On Discord a guild's share of PRESENCE_UPDATE, TYPING_START and GUILD_MEMBER_* traffic grows with
its member count: a 250,000-member guild makes thousands of times the events of a 50-member one.
:class:`GuildTraffic` picks the guild of each event with probability proportional to its
``member_count`` (a cumulative table and a bisection), then a random current member of it, and
renders the event straight to JSON text (:mod:`simulator.member_lists`).

Joins and leaves change the world, so what the bot is told stays true afterwards: a
GUILD_MEMBER_REMOVE marks the member departed (``Guild.departed``), a GUILD_MEMBER_ADD appends a new
member (or brings a departed one back once the user pool is used up), and ``member_count``, GUILD_CREATE
and member chunks follow. Which sessions receive the events is the gateway's business: it honours
their intents (GUILD_PRESENCES, GUILD_MESSAGE_TYPING, GUILD_MEMBERS), counting what it filters.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from typing import TYPE_CHECKING

from .member_lists import member_json

if TYPE_CHECKING:
    from .world import World
    from .world_model import Guild

__all__ = ("GuildTraffic", "TRAFFIC_KINDS", "BLEND")

#: Load kinds this module makes, and the dispatch each becomes.
TRAFFIC_KINDS = {"presence_update": "PRESENCE_UPDATE", "typing_start": "TYPING_START",
                 "guild_member_update": "GUILD_MEMBER_UPDATE", "guild_member_add": "GUILD_MEMBER_ADD",
                 "guild_member_remove": "GUILD_MEMBER_REMOVE"}
#: The mix of ``guild_traffic``: mostly presences, as on Discord, then typing, then member changes.
BLEND = (("presence_update", 70), ("typing_start", 15), ("guild_member_update", 9), ("guild_member_add", 3),
         ("guild_member_remove", 3))
_STATUSES = ("online", "idle", "dnd", "offline")


class GuildTraffic:
    """A seeded source of size-weighted guild events over ``guilds``.

    Parameters
    ----------
    world:
        The world whose members the events name (and whose joins and leaves they record).
    guilds:
        The guilds to spread events over (all of them, or one shard's).
    seed:
        Makes the sequence of events repeatable.
    """

    def __init__(self, world: World, guilds: list[Guild], seed: int = 0) -> None:
        if not guilds:
            raise ValueError("no guilds to send events to")
        self.world = world
        self.guilds = guilds
        self.rng = random.Random(seed)
        self._cumulative = list(itertools.accumulate(g.member_count for g in guilds))
        self._blend_kinds = [k for k, _ in BLEND]
        self._blend_weights = list(itertools.accumulate(w for _, w in BLEND))

    def next(self, kind: str) -> tuple[int, str, str]:
        """The next event of ``kind`` (a key of :data:`TRAFFIC_KINDS`, or ``guild_traffic`` for the blend).

        Returns ``(guild_id, event name, d as JSON)``.
        """
        rng = self.rng
        if kind == "guild_traffic":
            kind = self._blend_kinds[bisect.bisect_right(self._blend_weights, rng.randrange(self._blend_weights[-1]))]
        guild = self.guilds[bisect.bisect_right(self._cumulative, rng.randrange(self._cumulative[-1]))]
        if kind == "guild_member_add":
            event, data = self._join(guild)
            return guild.id, event, data
        position = self._member(guild)
        if kind == "guild_member_remove" and position > 0:  # the owner never leaves
            return guild.id, "GUILD_MEMBER_REMOVE", self._leave(guild, position)
        if kind == "presence_update":
            status = _STATUSES[rng.randrange(4)]
            uid = guild.member_id(position)
            client = f'{{"desktop":"{status}"}}' if status != "offline" else "{}"
            return guild.id, "PRESENCE_UPDATE", (f'{{"user":{{"id":"{uid}"}},"guild_id":"{guild.id}",'
                                                 f'"status":"{status}","activities":[],"client_status":{client}}}')
        member, _ = member_json(self.world, guild, position)
        if kind == "typing_start":
            channel = guild.channels[0].id
            return guild.id, "TYPING_START", (f'{{"channel_id":"{channel}","guild_id":"{guild.id}",'
                                              f'"user_id":"{guild.member_id(position)}",'
                                              f'"timestamp":{int(time.time())},"member":{member}}}')
        # guild_member_update, and a remove that drew the owner: the member as it is, with its guild
        return guild.id, "GUILD_MEMBER_UPDATE", f'{{"guild_id":"{guild.id}",' + member[1:]

    def _member(self, guild: Guild) -> int:
        """A random current human member's position (the owner when nobody else is left)."""
        rng = self.rng
        for _ in range(8):
            k = rng.randrange(guild.humans)
            if guild.has_position(k):
                return k
        return next(iter(guild.positions()), 0)

    def _join(self, guild: Guild) -> tuple[str, str]:
        """A new member at the end of the list, or a departed one back once the pool is used up."""
        world = self.world
        event = "GUILD_MEMBER_ADD"
        if guild.humans < world.pool_size:
            position = guild.humans
            guild.humans += 1
        elif guild.departed:
            position = guild.departed.pop()
        else:  # every user of the pool is a member already: an update instead of a join
            position, event = self._member(guild), "GUILD_MEMBER_UPDATE"
        member, _ = member_json(world, guild, position)
        return event, f'{{"guild_id":"{guild.id}",' + member[1:]

    def _leave(self, guild: Guild, position: int) -> str:
        if guild.departed is None:
            guild.departed = set()
        guild.departed.add(position)
        member, _ = member_json(self.world, guild, position)
        user = member[member.index('{"id"'):member.index('},"roles"') + 1]
        return f'{{"guild_id":"{guild.id}","user":{user}}}'
