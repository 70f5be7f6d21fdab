"""Per-shard state of one cluster process, kept up to date from discord.py's events.

:class:`ShardTracker` is the one source the heartbeat, the metrics and the watchdog read. It costs
nothing per gateway event beyond a dict increment: rather than a listener on
``on_socket_event_type`` (discord.py schedules one task per listener per event), it wraps the
parser functions of the connection state once, counting events by type. The same wrapper is
where one bad event stops: a parser that raises costs that event only (:mod:`shard.event_guard`),
never the shard or the cluster. Time since a shard last
received anything comes from discord.py's keep-alive handler (``_last_recv``), which is stamped on
every frame anyway.

States: ``CONNECTING`` until the shard asks to identify, ``IDENTIFYING`` while it waits in the
identify queue and until READY, ``READY`` after READY or RESUMED, ``RESUMING`` after a disconnect
while a session exists to resume, ``DISCONNECTED`` otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ipc.heartbeat import ShardBeat

from .event_guard import event_failed, shard_of

if TYPE_CHECKING:
    from discord.ext import commands

__all__ = ("ShardTracker", "ShardRecord")

_log = logging.getLogger(__name__)


class ShardRecord:
    """What the tracker knows about one shard."""

    __slots__ = ("id", "state", "since", "identifies", "resumes", "reconnects", "identified_at", "ready_at",
                 "identify_waits")

    def __init__(self, shard_id: int) -> None:
        self.id = shard_id
        self.state = "CONNECTING"
        #: ``time.monotonic()`` of the last state change.
        self.since = time.monotonic()
        self.identifies = 0
        self.resumes = 0
        self.reconnects = 0
        self.identified_at: float | None = None
        self.ready_at: float | None = None
        self.identify_waits = 0.0


class ShardTracker:
    """Shard states, counters and event totals of one cluster.

    Parameters
    ----------
    shard_ids:
        The shards this process runs (:meth:`expect` corrects them once the shards launch).

    The tracker reads nothing until :meth:`attach` hands it the bot (right after the bot is built,
    before it logs in), whose events it then follows.
    """

    __slots__ = ("bot", "shards", "events_by_type", "blocked_reason", "stopping", "was_all_ready", "changed",
                 "_listeners", "_parsers_wrapped", "_on_ready_payload")

    def __init__(self, shard_ids: Iterable[int]) -> None:
        self.bot: commands.AutoShardedBot | None = None
        self.shards: dict[int, ShardRecord] = {sid: ShardRecord(sid) for sid in shard_ids}
        self.events_by_type: dict[str, int] = {}
        #: Why identifies are held back (the identify budget guard), for the heartbeat.
        self.blocked_reason: str | None = None
        self.stopping = False
        self.was_all_ready = False
        self.changed = asyncio.Event()
        self._listeners: list[tuple[Callable[..., Any], str]] = []
        self._parsers_wrapped = False
        self._on_ready_payload: list[Callable[[int], None]] = []

    # --- wiring ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing to start: :meth:`attach` already follows the bot's events."""

    async def stop(self) -> None:
        """The cluster is shutting down: report STOPPING, stop counting disconnects, detach."""
        self.stopping = True
        self.changed.set()
        self.detach()

    def expect(self, shard_ids: Iterable[int]) -> None:
        """Track exactly ``shard_ids`` (once launch knows them, e.g. after ``GET /gateway/bot``)."""
        ids = list(shard_ids)
        self.shards = {sid: self.shards.get(sid) or ShardRecord(sid) for sid in ids}
        self.changed.set()

    def attach(self, bot: commands.AutoShardedBot) -> None:
        """Follow ``bot``: register the event listeners, and count events and skip those whose parse raises.

        Call it after every other wrapper of discord.py's parsers is installed (the lean message
        filter, early shedding, the config prefetch): its wrapper must be the outermost one, so that
        nothing a parser raises reaches discord.py's shard worker, which would end the client.
        """
        if self.bot is not None:
            raise RuntimeError("this tracker already follows a bot")
        self.bot = bot
        for name, func in (("on_shard_connect", self._on_ready), ("on_shard_resumed", self._on_resumed),
                           ("on_shard_disconnect", self._on_disconnect)):
            bot.add_listener(func, name)
            self._listeners.append((func, name))
        self._wrap_parsers(bot)

    def detach(self) -> None:
        if self.bot is not None:
            for func, name in self._listeners:
                self.bot.remove_listener(func, name)
        self._listeners.clear()

    def on_ready_payload(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(shard_id)`` the moment a shard's READY payload arrives, before discord.py parses it.

        This is the earliest proof that Discord accepted the shard's IDENTIFY (the identify queue
        starts the bucket's window from it); listeners on ``on_shard_connect`` run a loop turn later.
        """
        self._on_ready_payload.append(callback)

    def _ready_payload(self, data: Any) -> None:
        try:
            shard_id = int(data["shard"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            shard_id = 0  # an unsharded READY
        for callback in self._on_ready_payload:
            try:
                callback(shard_id)
            except Exception:  # never break the gateway
                _log.exception("READY callback failed")

    def _wrap_parsers(self, bot: commands.AutoShardedBot) -> None:
        parsers: dict[str, Callable[[Any], None]] | None = getattr(
            getattr(bot, "_connection", None), "parsers", None)
        if parsers is None or self._parsers_wrapped:
            if parsers is None:
                _log.warning("discord.py has no parser table here: events by type are not counted")
            return
        counts = self.events_by_type
        failed = self._parse_failed

        # The outermost wrapper of every parser (installed last): an exception in one event's parse is
        # counted and logged, and the event skipped (shard/event_guard.py); a try costs nothing until it raises.
        def counted(name: str, func: Callable[[Any], None]) -> Callable[[Any], None]:
            @functools.wraps(func)
            def wrapper(data: Any) -> None:
                counts[name] = counts.get(name, 0) + 1
                try:
                    func(data)
                except Exception as exc:
                    failed(name, data, exc)
            return wrapper

        def ready(func: Callable[[Any], None]) -> Callable[[Any], None]:
            @functools.wraps(func)
            def wrapper(data: Any) -> None:
                counts["READY"] = counts.get("READY", 0) + 1
                try:
                    self._ready_payload(data)
                    func(data)
                except Exception as exc:
                    failed("READY", data, exc)
            return wrapper

        for name, func in list(parsers.items()):
            parsers[name] = ready(func) if name == "READY" else counted(name, func)
        self._parsers_wrapped = True

    def _parse_failed(self, event: str, data: Any, exc: Exception) -> None:
        shard_count = getattr(self.bot, "shard_count", None) if self.bot is not None else None
        event_failed(event, "parse", exc, shard_id=shard_of(event, data, shard_count))

    # --- state changes --------------------------------------------------------------------------
    def _record(self, shard_id: int | None) -> ShardRecord | None:
        if shard_id is None:
            return None
        return self.shards.get(shard_id)

    def set_state(self, shard_id: int | None, state: str) -> None:
        rec = self._record(shard_id)
        if rec is None or rec.state == state:
            return
        rec.state = state
        rec.since = time.monotonic()
        if state == "READY":
            rec.ready_at = time.time()
            if all(r.state == "READY" for r in self.shards.values()):
                self.was_all_ready = True
        self.changed.set()

    def note_identifying(self, shard_id: int | None) -> None:
        """The shard entered ``before_identify_hook``."""
        self.set_state(shard_id, "IDENTIFYING")

    def note_identified(self, shard_id: int | None, waited_s: float) -> None:
        """The shard got its identify slot and sends IDENTIFY now."""
        rec = self._record(shard_id)
        if rec is not None:
            rec.identifies += 1
            rec.identified_at = time.time()
            rec.identify_waits += waited_s
            self.changed.set()

    def set_blocked(self, reason: str | None) -> None:
        if reason != self.blocked_reason:
            self.blocked_reason = reason
            self.changed.set()

    async def _on_ready(self, shard_id: int) -> None:
        self.set_state(shard_id, "READY")

    async def _on_resumed(self, shard_id: int) -> None:
        rec = self._record(shard_id)
        if rec is not None:
            rec.resumes += 1
        self.set_state(shard_id, "READY")

    async def _on_disconnect(self, shard_id: int) -> None:
        rec = self._record(shard_id)
        if rec is None or self.stopping:
            return
        rec.reconnects += 1
        ws = self.websocket(shard_id)
        resumable = ws is not None and getattr(ws, "session_id", None) is not None
        self.set_state(shard_id, "RESUMING" if resumable else "DISCONNECTED")

    # --- readings -------------------------------------------------------------------------------
    def websocket(self, shard_id: int) -> Any:
        """The shard's live ``DiscordWebSocket`` (discord.py keeps it on the shard's private parent), or None."""
        info = self.bot.get_shard(shard_id) if self.bot is not None else None
        parent = getattr(info, "_parent", None)
        return getattr(parent, "ws", None)

    def latency_s(self, shard_id: int) -> float | None:
        info = self.bot.get_shard(shard_id) if self.bot is not None else None
        if info is None:
            return None
        latency = info.latency
        return None if latency != latency or latency in (float("inf"), float("-inf")) else latency

    def last_receive_age_s(self, shard_id: int) -> float | None:
        """Seconds since the shard's socket last received any frame; None when it has no live socket."""
        ws = self.websocket(shard_id)
        keep_alive = getattr(ws, "_keep_alive", None)
        last = getattr(keep_alive, "_last_recv", None)
        if not isinstance(last, float):
            return None
        return max(0.0, time.perf_counter() - last)

    def is_open(self, shard_id: int) -> bool:
        info = self.bot.get_shard(shard_id) if self.bot is not None else None
        return info is not None and not info.is_closed()

    @property
    def total_events(self) -> int:
        return sum(self.events_by_type.values())

    def cluster_state(self) -> str:
        if self.stopping:
            return "STOPPING"
        if self.blocked_reason:
            return "BLOCKED"
        if self.shards and all(r.state == "READY" for r in self.shards.values()):
            return "READY"
        return "DEGRADED" if self.was_all_ready else "STARTING"

    def guilds_by_shard(self) -> dict[int, int]:
        counts = dict.fromkeys(self.shards, 0)
        for guild in self.bot.guilds if self.bot is not None else ():
            if guild.shard_id in counts:
                counts[guild.shard_id] += 1
        return counts

    def shard_beats(self) -> list[ShardBeat]:
        guilds = self.guilds_by_shard()
        out: list[ShardBeat] = []
        for sid, rec in self.shards.items():
            latency = self.latency_s(sid)
            age = self.last_receive_age_s(sid)
            out.append({
                "id": sid, "state": rec.state,
                "latency_ms": None if latency is None else round(latency * 1000, 2),
                "guilds": guilds.get(sid, 0),
                "last_event_age_s": None if age is None else round(age, 3),
                "identified_at": rec.identified_at, "ready_at": rec.ready_at, "identifies": rec.identifies,
                "resumes": rec.resumes, "reconnects": rec.reconnects,
            })
        return out
