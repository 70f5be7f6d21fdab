"""Op 8 REQUEST_GUILD_MEMBERS: Discord's rules, its rate limit, and chunks rendered as they are written.

The rules (``developers/events/gateway-events.mdx``, "Request Guild Members", and
``developers/change-log.mdx``, "Introducing Rate Limit When Requesting All Guild Members"):

- one ``guild_id`` per request; ``query`` (a prefix of the username or display name) or ``user_ids``
  (at most 100) is required; a ``nonce`` of over 32 bytes is ignored;
- the whole member list (``query: ""``) needs the GUILD_MEMBERS intent; without it Discord sends
  nothing back (discord-api-docs issue #5855), and so does the simulator, counting it in
  ``member_requests_ignored``;
- a prefix returns at most 100 members; ``presences: true`` needs GUILD_PRESENCES, else it is false;
- the whole list (``query: ""``, ``limit: 0``) is limited to one request per guild per bot every 30 s
  (``member_request_interval``); a repeat gets a RATE_LIMITED dispatch (``opcode`` 8, ``retry_after``,
  ``meta{guild_id, nonce}``) and no chunks;
- the answer is GUILD_MEMBERS_CHUNKs of up to 1,000 members whose ``chunk_count`` chunks add up to
  the guild's ``member_count``, the bot included.

A whole-list answer of a 250,000-member guild is 250 chunks. Each is a :class:`LazyMembersChunk`
that holds a range of member positions and renders when its socket writes it, so neither the queue
nor the RESUME buffer holds rendered members, and the writer's backpressure paces the rendering.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .fields import snowflake_of
from .frames import LazyFrame, dispatch_frame
from .jsontext import dumps
from .member_lists import CHUNK_SIZE, matches_query, members_json

if TYPE_CHECKING:
    from .connection import Connection
    from .sessions import Session
    from .state import Stats
    from .world import World
    from .world_model import Guild

__all__ = ("MemberRequests", "LazyMembersChunk", "QUERY_LIMIT", "USER_IDS_LIMIT")

_log = logging.getLogger(__name__)

GUILD_MEMBERS_INTENT = 1 << 1
GUILD_PRESENCES_INTENT = 1 << 8
#: Members a prefix query returns at most.
QUERY_LIMIT = 100
#: ``user_ids`` one request may name.
USER_IDS_LIMIT = 100
#: Rate-limit entries kept before expired ones are swept.
_SWEEP_AT = 10_000



class LazyMembersChunk(LazyFrame):
    """One GUILD_MEMBERS_CHUNK of a whole-list answer: member positions ``[start, stop)``, rendered when written.

    Position ``humans`` stands for the bot. ``humans`` and ``departed`` are the guild's member list when
    the request came, so every chunk of one answer describes the same list while members join and leave.
    """

    __slots__ = ("world", "guild", "humans", "start", "stop", "departed", "presences", "index", "count", "nonce",
                 "stats")

    def __init__(self, seq: int, world: World, guild: Guild, humans: int, start: int, stop: int,
                 departed: frozenset[int] | None, presences: bool, index: int, count: int, nonce: str | None,
                 stats: Stats) -> None:
        self.seq = seq
        self.world = world
        self.guild = guild
        self.humans = humans
        self.start = start
        self.stop = stop
        self.departed = departed
        self.presences = presences
        self.index = index
        self.count = count
        self.nonce = nonce
        self.stats = stats

    def render(self) -> str:
        guild, departed = self.guild, self.departed
        positions = range(self.start, min(self.stop, self.humans))
        members, presences, n = members_json(
            self.world, guild, (k for k in positions if k not in departed) if departed else positions,
            bot_member=self.world._bot_member(guild) if self.stop > self.humans else None, presences=self.presences)
        self.stats.members_sent += n
        self.stats.member_chunks_sent += 1
        body = f'{{"guild_id":"{guild.id}","members":{members},"chunk_index":{self.index},"chunk_count":{self.count}'
        if presences is not None:
            body += f',"presences":{presences}'
        if self.nonce is not None:
            body += f',"nonce":{dumps(self.nonce)}'
        return dispatch_frame(self.seq, "GUILD_MEMBERS_CHUNK", body + "}")


class MemberRequests:
    """The op 8 handler of one gateway, with the bot-wide whole-list rate limit.

    Parameters
    ----------
    world, stats:
        The simulator's world and counters.
    interval:
        Seconds between two whole-list requests for one guild (Discord: 30).
    clock:
        Monotonic seconds.
    """

    __slots__ = ("world", "stats", "interval", "clock", "_next_allowed")

    def __init__(self, world: World, stats: Stats, interval: float, clock: Callable[[], float]) -> None:
        self.world = world
        self.stats = stats
        self.interval = interval
        self.clock = clock
        self._next_allowed: dict[int, float] = {}

    def handle(self, conn: Connection, session: Session, d: object) -> None:
        """Answer one REQUEST_GUILD_MEMBERS payload (``d``), or close the connection 4002 when it is malformed."""
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        query, limit, user_ids = d.get("query"), d.get("limit", 0), d.get("user_ids")
        if (query is not None and not isinstance(query, str)) or type(limit) is not int or limit < 0:
            conn.close(4002, "Error while decoding payload (query/limit).")
            return
        wanted: list[int] | None = None
        if user_ids is not None:
            raw_ids = user_ids if isinstance(user_ids, list) else [user_ids]
            parsed = [snowflake_of(u) for u in raw_ids]
            if any(u is None for u in parsed) or len(parsed) > USER_IDS_LIMIT:
                conn.close(4002, "Error while decoding payload (user_ids).")
                return
            wanted = [u for u in parsed if u is not None]
        elif query is None:
            conn.close(4002, "Error while decoding payload (query or user_ids is required).")
            return
        raw_guild = d.get("guild_id")
        if isinstance(raw_guild, list):  # Discord takes one guild per request; a list of one is tolerated
            if len(raw_guild) != 1:
                conn.close(4002, "Error while decoding payload (one guild_id per request).")
                return
            raw_guild = raw_guild[0]
        guild_id = snowflake_of(raw_guild)
        if guild_id is None:
            conn.close(4002, "Error while decoding payload (guild_id).")
            return
        guild = self.world.guild(guild_id)
        if guild is None or (guild_id >> 22) % session.shard_count != session.shard_id:
            _log.debug("shard %d asked for members of guild %s it does not carry; ignored", session.shard_id, guild_id)
            return
        nonce = d.get("nonce")
        if not isinstance(nonce, str) or len(nonce.encode()) > 32:
            nonce = None
        presences = bool(d.get("presences")) and bool(session.intents & GUILD_PRESENCES_INTENT)
        self.stats.member_requests += 1
        if wanted is not None:
            self._by_ids(session, guild, wanted, presences, nonce)
        elif query:
            self._by_prefix(session, guild, query.lower(), min(limit or QUERY_LIMIT, QUERY_LIMIT), presences, nonce)
        elif not session.intents & GUILD_MEMBERS_INTENT:
            self.stats.member_requests_ignored += 1
            _log.info("shard %d asked for guild %d's member list without GUILD_MEMBERS: no answer", session.shard_id,
                      guild_id)
        elif limit:
            self._first(session, guild, limit, presences, nonce)
        else:
            self._whole_list(session, guild, presences, nonce)

    # -- answers -------------------------------------------------------------------------------------

    def _push(self, session: Session, guild: Guild, members: list[dict[str, Any]], presences: bool,
              nonce: str | None, not_found: list[str] | None = None) -> None:
        data: dict[str, Any] = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1}
        if not_found is not None:
            data["not_found"] = not_found
        if presences:
            data["presences"] = [p for p in (self._presence(guild, m["user"]["id"]) for m in members) if p]
        if nonce is not None:
            data["nonce"] = nonce
        self.stats.members_sent += len(members)
        self.stats.member_chunks_sent += 1
        session.push("GUILD_MEMBERS_CHUNK", dumps(data))

    def _presence(self, guild: Guild, user_id: str) -> dict[str, Any] | None:
        world = self.world
        uid = int(user_id)
        if uid == world.application_id:
            return world.presence_payload(uid, "online")
        index = world.user_index(uid)
        status = world.user_status(index) if index is not None else "offline"
        return None if status == "offline" else world.presence_payload(uid, status)

    def _by_ids(self, session: Session, guild: Guild, wanted: list[int], presences: bool, nonce: str | None) -> None:
        members: list[dict[str, Any]] = []
        not_found: list[str] = []
        for uid in wanted:
            member = self.world.member(guild.id, uid)
            if member is None:
                not_found.append(str(uid))
            else:
                members.append(member)
        self._push(session, guild, members, presences, nonce, not_found)

    def _by_prefix(self, session: Session, guild: Guild, prefix: str, limit: int, presences: bool,
                   nonce: str | None) -> None:
        world = self.world
        found: list[int] = []
        for k in guild.positions():
            if matches_query(world, guild, k, prefix):
                found.append(k)
                if len(found) >= limit:
                    break
        members = world.member_payloads(guild, found)
        bot = world.bot_user()
        if len(members) < limit and (bot["username"].lower().startswith(prefix)):
            members.append(world._bot_member(guild))
        self._push(session, guild, members, presences, nonce)

    def _first(self, session: Session, guild: Guild, limit: int, presences: bool, nonce: str | None) -> None:
        """``query: ""`` with a ``limit``: the first ``limit`` members, in chunks of 1,000."""
        self._chunks(session, guild, min(limit, guild.member_count), presences, nonce)

    def _whole_list(self, session: Session, guild: Guild, presences: bool, nonce: str | None) -> None:
        now = self.clock()
        allowed = self._next_allowed.get(guild.id, 0.0)
        if now < allowed:
            self.stats.member_requests_rate_limited += 1
            meta: dict[str, Any] = {"guild_id": str(guild.id)}
            if nonce is not None:
                meta["nonce"] = nonce
            session.push("RATE_LIMITED", dumps({"opcode": 8, "retry_after": round(allowed - now, 3), "meta": meta}))
            _log.info("shard %d asked for guild %d's whole member list again within %.0fs: RATE_LIMITED",
                      session.shard_id, guild.id, self.interval)
            return
        if len(self._next_allowed) >= _SWEEP_AT:
            self._next_allowed = {g: t for g, t in self._next_allowed.items() if t > now}
        self._next_allowed[guild.id] = now + self.interval
        self._chunks(session, guild, guild.member_count, presences, nonce)

    def _chunks(self, session: Session, guild: Guild, wanted: int, presences: bool, nonce: str | None) -> None:
        """Queue lazy chunks covering the first ``wanted`` members (the bot last when all are wanted)."""
        departed = frozenset(guild.departed) if guild.departed else None
        humans = guild.humans
        whole = wanted >= guild.member_count
        # Positions to cover: every base position (departed ones are skipped when rendered) plus the bot.
        if whole:
            span = humans + 1
        else:
            span = wanted
            if departed:  # the first `wanted` current members may reach past `wanted` base positions
                span, seen = 0, 0
                while seen < wanted:
                    if span not in departed:
                        seen += 1
                    span += 1
        count = max(1, math.ceil(span / CHUNK_SIZE))
        for index in range(count):
            start = index * CHUNK_SIZE
            stop = min(span, start + CHUNK_SIZE) if whole else min(span, start + CHUNK_SIZE, humans)
            session.push_lazy(functools.partial(LazyMembersChunk, world=self.world, guild=guild, humans=humans,
                                                start=start, stop=stop, departed=departed, presences=presences,
                                                index=index, count=count, nonce=nonce, stats=self.stats))
