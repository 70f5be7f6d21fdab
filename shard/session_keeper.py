"""Each shard's gateway session in Redis: a few hundred ms fresh while running, exact at a clean stop.

A restarted cluster RESUMEs from what this keeps (:mod:`shard.resume`). discord.py holds a
shard's session only in memory: ``ws.session_id``, ``ws.sequence`` (the last event read) and
``ws.gateway`` (the ``resume_gateway_url`` READY gave). :class:`SessionKeeper` reads them every
``INNKEEPER_SESSION_SAVE_INTERVAL`` seconds (0.25 s) and writes the sessions that changed, in one
pipeline, through :class:`~ipc.sessions.SessionStore`. A session that did not change is written
again before a third of its TTL has passed, so a quiet shard stays resumable.

After a ``kill -9`` the saved sequence is at most one interval behind what the process read: the
new process is replayed that interval's events (at most a few hundred ms of them), which
:mod:`shard.replay_guard` keeps from being answered twice.

:meth:`SessionKeeper.park` is the clean stop (``ClusterBot.close`` calls it first): it stops every
shard's reader, closes each socket with :data:`RESUMABLE_CLOSE_CODE`, and saves every session with
the sequence of the last event the process read, exactly. Discord ends a session closed with 1000
or 1001, which is what discord.py's own ``close()`` sends; any other code leaves it resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from innkeeper.services import BackgroundTasks
from ipc.sessions import SessionInfo

if TYPE_CHECKING:
    from discord.ext import commands

    from ipc.sessions import SessionStore

    from .tracker import ShardTracker

__all__ = ("SessionKeeper", "RESUMABLE_CLOSE_CODE", "live_sessions")

_log = logging.getLogger(__name__)

#: The close code of a clean stop: not 1000/1001, so Discord keeps the session resumable. discord.py
#: closes with 4000 itself when it means to resume (``DiscordWebSocket.close``'s default).
RESUMABLE_CLOSE_CODE = 4000
#: Seconds a clean stop may spend closing sockets and saving sessions.
PARK_TIMEOUT_S = 5.0

SESSION_SAVES = Counter("innkeeper_session_saves_total", "Shard sessions written to Redis for a later RESUME")
SESSION_SAVE_FAILURES = Counter("innkeeper_session_save_failures_total",
                                "Session saves that failed (Redis unreachable): a restart then identifies")


def _shard(bot: commands.AutoShardedBot, shard_id: int) -> Any:
    """discord.py's ``Shard`` object of ``shard_id`` (``ShardInfo._parent``), or None."""
    info = bot.get_shard(shard_id)
    return getattr(info, "_parent", None)


def live_sessions(bot: commands.AutoShardedBot, shard_ids: Any) -> list[SessionInfo]:
    """The resumable session of every shard in ``shard_ids`` that has one, read from discord.py's sockets."""
    shard_count = bot.shard_count
    if not shard_count:
        return []
    out: list[SessionInfo] = []
    for sid in shard_ids:
        ws = getattr(_shard(bot, sid), "ws", None)
        session_id = getattr(ws, "session_id", None)
        gateway = getattr(ws, "gateway", None)
        if not session_id or gateway is None:
            continue
        out.append(SessionInfo(sid, shard_count, str(session_id), getattr(ws, "sequence", None), str(gateway)))
    return out


class SessionKeeper:
    """Keeps the cluster's gateway sessions in Redis (see the module docstring).

    Parameters
    ----------
    tracker:
        The cluster's shard states: which shards this cluster runs, and the bot whose sockets hold
        the sessions (``tracker.bot``, once attached).
    store:
        Where sessions go.
    interval_s:
        ``INNKEEPER_SESSION_SAVE_INTERVAL``: the most a saved sequence lags behind after a crash.
    active:
        Whether this process's generation handles events (:mod:`shard.handover`): only then are its
        sessions saved, and parked at a clean stop. A generation a reshard replaced saves nothing (the
        sessions under the shard keys are the new generation's) and, stopped, closes its sockets as
        discord.py does (1000): its sessions end.
    """

    __slots__ = ("tracker", "store", "interval_s", "active", "_saved", "_tasks", "_failing", "parked")

    def __init__(self, tracker: ShardTracker, store: SessionStore, *, interval_s: float = 0.25,
                 active: Callable[[], bool] = lambda: True) -> None:
        self.active = active
        self.tracker = tracker
        self.store = store
        self.interval_s = interval_s
        #: What was last written per shard: (session id, sequence, gateway), and when (monotonic).
        self._saved: dict[int, tuple[tuple[str, int | None, str], float]] = {}
        self._tasks = BackgroundTasks("sessions")
        self._failing = False
        #: Whether :meth:`park` closed the sockets (a clean stop).
        self.parked = False

    async def start(self) -> None:
        if not len(self._tasks):
            self._tasks.every(self.interval_s, self.save_changed, name="save", on_error=self._failed)

    async def stop(self) -> None:
        await self._tasks.cancel()

    def _live(self) -> list[SessionInfo]:
        bot = self.tracker.bot
        return [] if bot is None else live_sessions(bot, self.tracker.shards)

    def _changed(self) -> list[SessionInfo]:
        now = time.monotonic()
        refresh_s = self.store.ttl_s / 3
        out = []
        for info in self._live():
            key = (info.session_id, info.sequence, info.resume_gateway_url)
            last = self._saved.get(info.shard_id)
            if last is None or last[0] != key or now - last[1] >= refresh_s:
                out.append(info)
        return out

    async def save_changed(self) -> int:
        """Write the sessions that changed since the last save (or are due for a refresh); returns how many."""
        if not self.active():
            return 0
        infos = self._changed()
        if infos:
            await self._save(infos)
        if self._failing:
            _log.info("shard sessions are saved again")
            self._failing = False
        return len(infos)

    async def _save(self, infos: list[SessionInfo]) -> None:
        await self.store.save_many(infos)
        now = time.monotonic()
        for info in infos:
            self._saved[info.shard_id] = ((info.session_id, info.sequence, info.resume_gateway_url), now)
        SESSION_SAVES.inc(len(infos))

    def _failed(self, exc: Exception) -> None:
        SESSION_SAVE_FAILURES.inc()
        if not self._failing:
            _log.warning("cannot save shard sessions (%s): a restart now would identify", exc)
        self._failing = True

    async def park(self) -> int:
        """Clean stop: stop reading, close every socket resumably, save each exact session; returns how many.

        After this no event reaches the process, and each saved sequence is the last event it read:
        the next process RESUMEs where this one stopped, nothing replayed twice, nothing skipped.
        A process whose generation no longer handles events parks nothing (returns 0): discord.py's
        own close then ends its sessions.
        """
        await self._tasks.cancel()
        if not self.active():
            _log.info("this generation no longer handles events: its sessions end with it")
            return 0
        self.parked = True
        self.tracker.stopping = True  # the closes below are not disconnects to report
        bot = self.tracker.bot
        shards = [] if bot is None else [(sid, _shard(bot, sid)) for sid in self.tracker.shards]
        for _, shard in shards:
            if shard is not None:
                shard._cancel_task()  # the reader: no frame is read after this
                stop_reconnecting = getattr(shard, "stop_reconnecting", None)
                if stop_reconnecting is not None:
                    stop_reconnecting()  # nor does a reconnect under way open a new socket
        infos = self._live()

        async def close(shard: Any) -> None:
            ws = getattr(shard, "ws", None)
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close(code=RESUMABLE_CLOSE_CODE)

        try:
            async with asyncio.timeout(PARK_TIMEOUT_S):
                await asyncio.gather(*(close(shard) for _, shard in shards if shard is not None))
                if infos:
                    await self._save(infos)
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: the restart identifies instead
            SESSION_SAVE_FAILURES.inc()
            _log.warning("shard sessions not saved at shutdown (%s): the restart will identify", exc)
            return 0
        _log.info("closed %d shard sockets resumably and saved %d sessions", len(shards), len(infos))
        return len(infos)
