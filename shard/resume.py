"""A restarted cluster RESUMEs the sessions its predecessor left, with the guild cache rebuilt first.

discord.py resumes only inside one process (its issue #2283 declined more). :class:`Resumer`
carries a session across a process restart through discord.py's own resume path:

1. :meth:`Resumer.saved` reads the sessions :class:`~shard.session_keeper.SessionKeeper` kept in
   Redis, for this cluster's shards under this shard count (another count's sessions route guilds
   to other shards, and are never used).
2. :meth:`Resumer.rehydrate` rebuilds each such shard's guilds from the snapshots
   :class:`~shard.snapshots.SnapshotService` saved (guild, channels, roles, the bot's own member),
   before the RESUME goes out, so the replayed events and those after them find their guild.
   The bot's user and application come from ``login()``, which ran before the shards launch.
3. :meth:`Resumer.connect` opens the socket with ``DiscordWebSocket.from_client(..., gateway=resume
   URL, session=, sequence=, resume=True)``: discord.py sends RESUME, and its shard worker handles
   what follows. Discord replays what the session missed and sends RESUMED; or, when the session
   expired or was invalidated, INVALID_SESSION, on which discord.py identifies again through
   ``before_identify_hook``, that is through the shared identify queue. A resume costs no identify.
4. discord.py fires ``on_ready`` once every shard sent READY, and a resumed shard never does:
   :meth:`Resumer.note_resumed` counts a shard resumed at start-up as ready in discord.py's own
   bookkeeping, so ``on_ready``, ``wait_until_ready()`` and ``is_ready()`` behave as after a cold
   start, whether the shards resumed, identified, or some of each.

What the rebuilt cache may get wrong, and for how long: a snapshot is at most
``INNKEEPER_SNAPSHOT_INTERVAL`` old (300 s) plus the downtime. Channel, role and guild changes in
the events Discord replays (every event since the saved sequence) repair the cache as discord.py
applies them; a change older than the snapshot but before the last save of the old process's
session is not replayed, and stays stale until the next update of that object or the next fresh
IDENTIFY. A guild whose snapshot is missing is unknown until its next GUILD_CREATE; discord.py
drops its events meanwhile (it logs them at debug level). Members are not cached by this bot
(``MemberCacheFlags.none()``), except its own member, which the snapshot carries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yarl
from discord.gateway import DiscordWebSocket
from prometheus_client import Counter
from redis.exceptions import RedisError

from innkeeper.errors import InnkeeperError

if TYPE_CHECKING:
    from discord.ext import commands

    from ipc.sessions import SessionInfo, SessionStore
    from ipc.snapshots import GuildSnapshotStore

    from .replay_guard import ReplayGuard
    from .tracker import ShardTracker

__all__ = ("Resumer", "RESTART_RESUMES", "REHYDRATED_GUILDS")

_log = logging.getLogger(__name__)

#: Seconds a RESUME may take to connect and send (discord.py's own reidentify allows 60).
CONNECT_TIMEOUT_S = 30.0

RESTART_RESUMES = Counter("innkeeper_restart_resumes_total",
                          "Shards of a restarted process that sent RESUME with a saved session, by outcome",
                          ["outcome"])
REHYDRATED_GUILDS = Counter("innkeeper_rehydrated_guilds_total",
                            "Guilds rebuilt from Redis snapshots before a RESUME")


class Resumer:
    """Resume a restarted cluster's shards (see the module docstring).

    Parameters
    ----------
    sessions:
        The saved sessions.
    snapshots:
        The guild snapshots to rebuild the cache from; None resumes with an empty cache.
    tracker:
        The cluster's shard states (RESUMING while the RESUME is out).
    guard:
        Filters the replayed events whose commands the previous process already started
        (:mod:`shard.replay_guard`); None lets them run again.
    allowed:
        Whether this process may resume saved sessions now: only while its generation handles events
        (:meth:`shard.handover.Handover.is_active`); a generation brought up beside the active one
        identifies every shard.
    """

    __slots__ = ("sessions", "snapshots", "tracker", "guard", "allowed", "_pending", "_failed",
                 "_rebuilt")

    def __init__(self, sessions: SessionStore, snapshots: GuildSnapshotStore | None, tracker: ShardTracker,
                 guard: ReplayGuard | None = None, *, allowed: Callable[[], bool] = lambda: True) -> None:
        self.allowed = allowed
        self.sessions = sessions
        self.snapshots = snapshots
        self.tracker = tracker
        self.guard = guard
        #: Shards that sent RESUME at start-up and wait for RESUMED.
        self._pending: set[int] = set()
        #: Why the last :meth:`connect` of a shard returned None: ``no_snapshot`` or ``connect``.
        self._failed: dict[int, str] = {}
        #: Shards whose guilds were rebuilt from their snapshots (once per process).
        self._rebuilt: set[int] = set()

    async def saved(self, shard_ids: Sequence[int], shard_count: int) -> dict[int, SessionInfo]:
        """The saved sessions of ``shard_ids`` under ``shard_count``; none when Redis cannot say, or when this
        process's generation does not handle events (the saved sessions are the active generation's)."""
        if not self.allowed():
            _log.info("this generation does not handle events yet: every shard identifies")
            return {}
        try:
            found = await self.sessions.load_many(shard_ids, shard_count)
        except (RedisError, OSError) as exc:
            _log.warning("cannot read saved sessions (%s): every shard identifies", exc)
            return {}
        if found:
            _log.info("saved sessions for %d of %d shards: resuming them", len(found), len(shard_ids))
        return found

    async def rehydrate(self, bot: commands.AutoShardedBot, shard_id: int) -> int:
        """Add the guilds of ``shard_id`` from their snapshots to discord.py's cache; returns how many it added."""
        if self.snapshots is None:
            return 0
        try:
            snapshots = await self.snapshots.load_shard(shard_id)
        except InnkeeperError as exc:
            _log.warning("cannot load guild snapshots of shard %d (%s): resuming with its guilds unknown",
                         shard_id, exc, extra={"shard_id": shard_id})
            return 0
        state: Any = bot._connection
        shard_count = bot.shard_count or 1
        added = 0
        for snapshot in snapshots:
            try:
                gid = int(snapshot["id"])
                if (gid >> 22) % shard_count != shard_id or state._get_guild(gid) is not None:
                    continue  # saved under another shard count, or already known
                state._add_guild_from_data(_guild_payload(snapshot))
            except Exception:  # noqa: BLE001 - one odd snapshot must not stop the others
                _log.exception("cannot rebuild guild %s from its snapshot; skipping it", snapshot.get("id"))
                continue
            added += 1
        REHYDRATED_GUILDS.inc(added)
        return added

    async def connect(self, bot: commands.AutoShardedBot, info: SessionInfo) -> DiscordWebSocket | None:
        """Rebuild the shard's guilds, then open its socket and send RESUME; None to identify instead.

        A shard whose guilds cannot be rebuilt (no snapshot: the old process died before its first
        save, or they expired) identifies: resumed with an empty cache it would never learn its
        guilds, since Discord sends no GUILD_CREATE on a RESUME.
        """
        sid = info.shard_id
        self.tracker.set_state(sid, "RESUMING")
        if sid not in self._rebuilt:  # a retry after an unreachable gateway rebuilds nothing again
            await self.rehydrate(bot, sid)
            self._rebuilt.add(sid)
        guilds = sum(1 for g in bot.guilds if g.shard_id == sid)
        self._failed[sid] = "no_snapshot"
        if self.snapshots is not None and not guilds:
            RESTART_RESUMES.labels("no_snapshot").inc()
            _log.info("shard %d has a saved session but no guild snapshot: identifying instead", sid,
                      extra={"shard_id": sid})
            return None
        if self.guard is not None:
            await self.guard.load(sid)  # before the RESUME: the replay starts with its first frame
        try:
            coro = DiscordWebSocket.from_client(bot, gateway=yarl.URL(info.resume_gateway_url), shard_id=sid,
                                                session=info.session_id, sequence=info.sequence, resume=True)
            ws = await asyncio.wait_for(coro, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - unreachable, refused: retried while the session lives
            if self.guard is not None:
                self.guard.finish(sid)
            self._failed[sid] = "connect"
            RESTART_RESUMES.labels("failed").inc()
            _log.warning("shard %d could not send RESUME (%s)", sid, exc, extra={"shard_id": sid})
            return None
        self._failed.pop(sid, None)
        self._pending.add(sid)
        RESTART_RESUMES.labels("sent").inc()
        _log.info("shard %d sent RESUME (session %s…, sequence %s) with %d guilds rebuilt", sid,
                  info.session_id[:8], info.sequence, guilds, extra={"shard_id": sid})
        return ws

    def worth_retrying(self, info: SessionInfo) -> bool:
        """Whether to try the RESUME again: the gateway could not be reached, and the session may still live.

        A gateway outage must not turn a restart into a fresh IDENTIFY of every shard once it ends:
        the session stays resumable for Discord's resume window, which the saved session's TTL
        (``INNKEEPER_SESSION_TTL``) stands for.
        """
        return (self._failed.get(info.shard_id) == "connect"
                and time.time() < (info.saved_at or 0) + self.sessions.ttl_s)

    def attach(self, bot: commands.AutoShardedBot) -> None:
        """Listen for the outcome of each start-up RESUME (RESUMED, or READY after a fresh IDENTIFY)."""
        async def on_shard_resumed(shard_id: int) -> None:
            self.note_resumed(bot, shard_id)

        async def on_shard_connect(shard_id: int) -> None:
            self.note_reidentified(shard_id)

        bot.add_listener(on_shard_resumed, "on_shard_resumed")
        bot.add_listener(on_shard_connect, "on_shard_connect")

    def note_resumed(self, bot: commands.AutoShardedBot, shard_id: int) -> None:
        """``on_shard_resumed``: a shard resumed at start-up counts as ready in discord.py's bookkeeping."""
        if shard_id not in self._pending:
            return
        self._pending.discard(shard_id)
        if self.guard is not None:
            self.guard.finish(shard_id)  # Discord sends RESUMED after the replay
        RESTART_RESUMES.labels("resumed").inc()
        if bot.is_ready():
            return
        state: Any = bot._connection
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        done.set_result(None)
        # discord.py's AutoShardedConnectionState fires on_ready once every shard has a ready task
        # (parse_ready); a resumed shard gets a finished one.
        state._ready_tasks[shard_id] = done
        if len(state._ready_tasks) == len(state.shard_ids) and state._ready_task is None:
            state._ready_task = loop.create_task(state._delay_ready())

    def note_reidentified(self, shard_id: int) -> None:
        """The shard identified after all (its session had expired or was invalidated)."""
        if shard_id in self._pending:
            self._pending.discard(shard_id)
            if self.guard is not None:
                self.guard.finish(shard_id)
            RESTART_RESUMES.labels("invalid").inc()
            _log.info("shard %d's saved session was not resumable: it identified", shard_id,
                      extra={"shard_id": shard_id})


#: Voice and stage channels: discord.py requires their ``bitrate`` and ``user_limit``.
_VOICE_TYPES = frozenset({2, 13})


def _guild_payload(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A GUILD_CREATE-shaped payload from a snapshot (the fields discord.py requires, defaulted)."""
    payload: dict[str, Any] = {"unavailable": False, "features": [], "emojis": [], "stickers": [], "members": [],
               "threads": [], "voice_states": [], "presences": [], "stage_instances": [],
               "guild_scheduled_events": [], "soundboard_sounds": [], "verification_level": 0,
               "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
               "nsfw_level": 0, "premium_tier": 0, "preferred_locale": "en-US", "afk_timeout": 300}
    payload.update({k: v for k, v in snapshot.items() if k != "shard_id"})
    channels = []
    for channel in payload.get("channels") or ():
        if channel.get("type") in _VOICE_TYPES:  # snapshots of earlier releases lack these
            channel = {"bitrate": 64000, "user_limit": 0, **channel}
        channels.append(channel)
    payload["channels"] = channels
    return payload
