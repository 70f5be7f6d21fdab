"""Nothing done twice across a restart: replayed commands that the old process already started are skipped.

A process killed without warning leaves a saved sequence up to ``INNKEEPER_SESSION_SAVE_INTERVAL``
behind what it had read (:mod:`shard.session_keeper`). The next process RESUMEs from there, and
Discord replays every event since, some of which the old process had already acted on. Commands are
what must not run twice (a reminder set twice, a warning given twice, two answers), so:

* **Marks.** When a command starts (past admission, before its body), :meth:`ReplayGuard.mark`
  records the id of the message or interaction it came from, in a sorted set per shard
  (``keys.handled_events``, score = time in ms, kept ``INNKEEPER_SESSION_TTL`` seconds: as long as a
  session may be resumed). The writes leave in one pipeline per event-loop turn, off the command's
  path: a command never waits for its mark.
* **Replay.** Before a restarted shard sends RESUME, :meth:`ReplayGuard.load` reads that shard's
  recent marks, and :meth:`ReplayGuard.install` puts a filter in front of discord.py's
  MESSAGE_CREATE and INTERACTION_CREATE parsers. A replayed event whose id is marked is dropped
  before it is parsed, and counted (``innkeeper_replayed_duplicates_total{event}``). When the shard's
  RESUMED arrives (Discord sends it after the replay), :meth:`ReplayGuard.finish` forgets its marks;
  once no shard is replaying, the filter is taken out again, so a running cluster pays nothing for it.

Semantics: a command is run at most once across a crash. A command that started in the killed
process and died with it is not run again (its mark exists); one that was still waiting for
admission was not marked, and runs in the new process. Plain messages are not marked (that would be
a Redis write per message): automod may see up to one save interval of messages twice after a
``kill -9`` (a clean stop replays nothing, see :meth:`~shard.session_keeper.SessionKeeper.park`).
A mark written in the last event-loop turn before a ``kill -9`` may be lost with the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from redis.exceptions import RedisError

from .parser_filters import ParserFilters

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from discord.ext import commands

    from ipc.keys import Keys

__all__ = ("ReplayGuard", "REPLAYED_DUPLICATES")

_log = logging.getLogger(__name__)

#: The events whose replays are filtered: the ones commands come from.
GUARDED_EVENTS = ("MESSAGE_CREATE", "INTERACTION_CREATE")

REPLAYED_DUPLICATES = Counter("innkeeper_replayed_duplicates_total",
                              "Events a RESUME replayed whose command the previous process had already started",
                              ["event"])
MARK_FAILURES = Counter("innkeeper_command_mark_failures_total",
                        "Command marks that could not be written to Redis (a restart may run those commands again)")


class ReplayGuard:
    """Marks started commands, and filters their replays after a restart (see the module docstring).

    Parameters
    ----------
    redis, keys:
        Where marks go.
    ttl_s:
        How long marks are kept (``INNKEEPER_SESSION_TTL``).
    filters:
        The bot's parser filters (:mod:`shard.parser_filters`), shared with the generation hand-over;
        by default its own.
    """

    __slots__ = ("redis", "keys", "ttl_s", "shard_count", "_pending", "_flushing", "_replaying", "filters",
                 "_bot", "_failing", "_duplicates")

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, ttl_s: float = 120.0,
                 filters: ParserFilters | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.shard_count = 1
        self._pending: list[tuple[int, int]] = []
        self._flushing: asyncio.Task[None] | None = None
        #: Shards between their RESUME and RESUMED, with the ids their old process marked.
        self._replaying: dict[int, set[int]] = {}
        self.filters = filters if filters is not None else ParserFilters()
        self._duplicates = {event: REPLAYED_DUPLICATES.labels(event) for event in GUARDED_EVENTS}
        self._bot: commands.AutoShardedBot | None = None
        self._failing = False

    # --- marks (the old process) ------------------------------------------------------------------
    def mark(self, shard_id: int, event_id: int) -> None:
        """Record that a command started on ``event_id`` (a message or interaction id); never waits."""
        self._pending.append((shard_id, event_id))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush(), name="replay-marks")

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the rest of this loop turn's marks go in the same pipeline
        batch, self._pending = self._pending, []
        self._flushing = None
        now_ms = int(time.time() * 1000)
        ttl_ms = max(1, int(self.ttl_s * 1000))
        by_shard: dict[int, dict[str, int]] = {}
        for sid, eid in batch:
            by_shard.setdefault(sid, {})[str(eid)] = now_ms
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid, members in by_shard.items():
                    key = self.keys.handled_events(sid)
                    pipe.zadd(key, members)
                    pipe.zremrangebyscore(key, "-inf", now_ms - ttl_ms)
                    pipe.pexpire(key, ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            MARK_FAILURES.inc(len(batch))
            if not self._failing:
                _log.warning("cannot record started commands in Redis (%s): after a crash, a RESUME may run "
                             "them again", exc)
            self._failing = True
            return
        if self._failing:
            _log.info("started commands are recorded in Redis again")
        self._failing = False

    async def settle(self) -> None:
        """Wait until the marks made so far are written (tests, shutdown)."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)

    # --- replay (the new process) -----------------------------------------------------------------
    def install(self, bot: commands.AutoShardedBot) -> None:
        """Remember the bot whose parsers are filtered while a shard replays."""
        self._bot = bot
        self.filters.install(bot)

    async def load(self, shard_id: int) -> int:
        """Before ``shard_id`` sends RESUME: read its recent marks and filter its replay; returns how many."""
        if self._bot is not None:
            self.shard_count = self._bot.shard_count or 1
        now_ms = int(time.time() * 1000)
        try:
            raw = await self.redis.zrangebyscore(self.keys.handled_events(shard_id), now_ms - int(self.ttl_s * 1000),
                                                 "+inf")
        except (RedisError, OSError) as exc:
            _log.warning("cannot read the commands shard %d already started (%s): its replay is not filtered",
                         shard_id, exc, extra={"shard_id": shard_id})
            return 0
        self._replaying[shard_id] = {int(x) for x in raw if isinstance(x, bytes | str)}
        self._filter_on()
        return len(raw)

    def finish(self, shard_id: int) -> None:
        """The shard's replay is over (RESUMED, or it identified after all)."""
        if self._replaying.pop(shard_id, None) is not None and not self._replaying:
            self._filter_off()

    def _filter_on(self) -> None:
        if self._bot is not None and not self.filters.active("replay"):
            self.filters.set("replay", GUARDED_EVENTS, self._drop)

    def _filter_off(self) -> None:
        self.filters.set("replay", GUARDED_EVENTS, None)

    def _drop(self, event: str, data: Any) -> bool:
        if not self.seen(data):
            return False
        self._duplicates[event].inc()
        _log.info("skipped a replayed %s (%s): its command already started before the restart", event, data.get("id"))
        return True

    def seen(self, data: Any) -> bool:
        """Whether a raw MESSAGE_CREATE or INTERACTION_CREATE is a replay of a command already started."""
        try:
            eid = int(data["id"])
            guild_id = data.get("guild_id")
            sid = (int(guild_id) >> 22) % self.shard_count if guild_id else 0  # DMs come to shard 0
        except (KeyError, TypeError, ValueError):
            return False
        marks = self._replaying.get(sid)
        return marks is not None and eid in marks
