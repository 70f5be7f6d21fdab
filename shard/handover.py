"""One generation handles each command while two overlap: the cluster's side of a zero-downtime reshard.

During a reshard (``cluster/reshard.py``) the next generation of clusters (the new shard count)
runs beside the active one, and Discord sends each guild's events to both (every live session whose
``(shard_id, shard_count)`` covers the guild). :class:`Handover` reads the generations record
(:mod:`ipc.generations`) and decides, per raw event, whether this process handles it:

==================================  =============================================================
this process                        handles
==================================  =============================================================
no reshard, or the only generation  everything (no filter at all: nothing is paid)
the next one, before ``T`` is set   no command: MESSAGE_CREATE and INTERACTION_CREATE are dropped
                                    unparsed (the other events still fill its caches)
the active one, once ``T`` is set   the commands whose snowflake was created before ``T``
the next one, once ``T`` is set     the commands whose snowflake was created at or after ``T``
any other generation                no command
==================================  =============================================================

``T`` is a Unix time in ms; an event's time is its id's (``(id >> 22) + Discord's epoch``), the same
for both generations, so each command is handled by exactly one of them, never by both, never by
neither. The filter sits in front of every parser wrapper (:mod:`shard.parser_filters`): a dropped
message never reaches the lean filter, automod or the command pipeline.

Background work follows the same switch (:class:`WhileActive`): reminders, maintenance, snapshots
and the command sync run in the generation that handles events *now*: the old one until ``T``,
the new one from ``T``. Sessions are saved only by the handling generation
(:meth:`Handover.is_active`): the new one's shard sessions must not be overwritten by the old
one's, which end with its processes (closed with 1000 when it stops).

The record is read every second, and every 0.1 s while a reshard involves this process, and each
change is acknowledged (:func:`ipc.generations.ack_generation`) once applied, so the launcher sets
the switch only when every process knows of a reshard, and ``T`` far enough ahead for all of them.
``T`` never moves once set. A new generation's process that learns it late (a stalled event loop)
loses nothing: while holding it keeps the commands it dropped for :data:`HELD_S` seconds and hands
those created from ``T`` on to its parsers when it learns ``T``. An old generation's process that
learns it late may have answered commands of that late interval that the new one answered too; the
launcher reports such a late acknowledgement.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from innkeeper.services import BackgroundTasks, Service
from ipc.generations import GenerationState, ack_generation, ack_value, read_generations

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

    from .parser_filters import ParserFilters

__all__ = ("Handover", "Handles", "handles", "WhileActive", "event_ms", "GUARDED_EVENTS")

_log = logging.getLogger(__name__)

#: The events commands come from.
GUARDED_EVENTS = ("MESSAGE_CREATE", "INTERACTION_CREATE")
_DISCORD_EPOCH_MS = 1_420_070_400_000
#: How often the record is read: normally, and while a reshard involves this process.
POLL_S, FAST_POLL_S = 1.0, 0.1
#: While a new generation holds, the commands it drops are kept this long (and at most this many):
#: if it learns ``T`` only after ``T`` (a stalled process), the ones created from ``T`` on are still its own.
HELD_S, HELD_MAX = 10.0, 5_000


class Handles(enum.Enum):
    """Which commands a process handles (see the module docstring)."""

    ALL = "all"
    NONE = "none"
    BEFORE = "before"  # the active generation, once T is set
    FROM = "from"  # the next generation, once T is set


def handles(state: GenerationState | None, generation: int) -> Handles:
    """What process of ``generation`` handles under ``state`` (pure: unit-tested)."""
    if state is None:
        return Handles.ALL
    if generation == state.active:
        return Handles.BEFORE if state.next is not None and state.switch_at_ms is not None else Handles.ALL
    if generation == state.next:
        return Handles.FROM if state.switch_at_ms is not None else Handles.NONE
    return Handles.NONE


def event_ms(data: Any) -> int:
    """Unix ms at which the event's id (a message or interaction snowflake) was created; 0 when it has none."""
    try:
        return (int(data["id"]) >> 22) + _DISCORD_EPOCH_MS
    except (KeyError, TypeError, ValueError):
        return 0


class Handover:
    """This process's generation and what it handles now (see the module docstring).

    Parameters
    ----------
    redis, keys:
        Where the generations record lives.
    generation, cluster_id:
        This process's generation (``python -m shard --generation``) and cluster id.
    filters:
        The bot's parser filters.
    clock:
        Unix seconds.
    """

    __slots__ = ("redis", "keys", "generation", "cluster_id", "filters", "clock", "state", "mode", "_active",
                 "_acked", "_watchers", "_tasks", "_timer", "_changes", "_failing", "_held", "replayed")

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, generation: int, cluster_id: int, filters: ParserFilters,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.generation = generation
        self.cluster_id = cluster_id
        self.filters = filters
        self.clock = clock
        self.state: GenerationState | None = None
        self.mode = Handles.ALL
        self._active = True
        self._acked: str | None = None
        self._watchers: list[Callable[[bool], Awaitable[None]]] = []
        self._tasks = BackgroundTasks("handover")
        self._timer: asyncio.TimerHandle | None = None
        self._changes: asyncio.Queue[bool] = asyncio.Queue()
        self._failing = False
        #: Commands dropped while holding: (received at, event, raw payload), oldest first.
        self._held: collections.deque[tuple[float, str, Any]] = collections.deque(maxlen=HELD_MAX)
        #: Held commands handled after all, because ``T`` came late (created at or after it).
        self.replayed = 0

    # --- readings -------------------------------------------------------------------------------
    def is_active(self) -> bool:
        """Whether this generation handles events now (background work and session saves follow it)."""
        return self._active

    def describe(self) -> str:
        """For the heartbeat: ``all``, ``none``, ``before <T>`` or ``from <T>`` (T in Unix ms)."""
        if self.mode in (Handles.BEFORE, Handles.FROM) and self.state is not None:
            return f"{self.mode.value} {self.state.switch_at_ms}"
        return self.mode.value

    def drop(self, event: str, data: Any) -> bool:
        """The parser filter: True when the other generation handles this event."""
        mode = self.mode
        if mode is Handles.NONE:
            if self.state is not None and self.generation == self.state.next:  # holding: maybe ours after all
                now, held = self.clock(), self._held
                while held and held[0][0] < now - HELD_S:
                    held.popleft()
                held.append((now, event, data))
            return True
        t = self.state.switch_at_ms if self.state is not None else None
        if t is None:
            return mode is not Handles.ALL
        ms = event_ms(data)
        return ms >= t if mode is Handles.BEFORE else ms < t

    def _active_now(self) -> bool:
        mode = self.mode
        if mode is Handles.ALL:
            return True
        if mode is Handles.NONE:
            return False
        t = self.state.switch_at_ms if self.state is not None else None
        before = t is None or self.clock() * 1000 < t
        return before if mode is Handles.BEFORE else not before

    # --- applying the record --------------------------------------------------------------------
    def apply(self, state: GenerationState | None) -> None:
        """Apply a record: the parser filter, the switch timer, and the active flag."""
        self.state = state
        mode = handles(state, self.generation)
        if mode != self.mode:
            _log.info("generation %d: handling %s", self.generation,
                      mode.value + (f" {state.switch_at_ms}" if state is not None and mode in (
                          Handles.BEFORE, Handles.FROM) else ""),
                      extra={"generation": self.generation})
        held = self.mode is Handles.NONE and mode is Handles.FROM
        self.mode = mode
        self.filters.set("handover", GUARDED_EVENTS, None if mode is Handles.ALL else self.drop)
        if held:
            self._replay_held()
        elif mode is not Handles.NONE:
            self._held.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        t = state.switch_at_ms if state is not None else None
        if mode in (Handles.BEFORE, Handles.FROM) and t is not None:
            delay = t / 1000 - self.clock()
            if delay > 0:
                self._timer = asyncio.get_running_loop().call_later(delay, self._flip)
        self._flip()

    def _replay_held(self) -> None:
        """``T`` is known now: hand the held commands created from ``T`` on to the parsers after all.

        Normally none is: every process applies ``T`` before ``T`` comes. A process that stalled
        past it would otherwise have dropped commands that are its own (the old generation leaves
        them to it), so nothing is lost, only late.
        """
        held, self._held = self._held, collections.deque(maxlen=HELD_MAX)
        horizon = self.clock() - HELD_S
        bot = self.filters.bot
        if bot is None:
            return
        parsers = bot._connection.parsers
        for at, event, data in held:
            if at < horizon or self.drop(event, data):
                continue
            self.replayed += 1
            try:
                parsers[event](data)
            except Exception:  # never break the switch: the parsers' own guard counts failures
                _log.exception("a held %s could not be handled", event)
        if self.replayed:
            _log.warning("generation %d learned the switch late: handled %d held commands created after it",
                         self.generation, self.replayed, extra={"generation": self.generation})

    def _flip(self) -> None:
        active = self._active_now()
        if active != self._active:
            self._active = active
            _log.info("generation %d is %s", self.generation, "active" if active else "no longer active",
                      extra={"generation": self.generation})
            self._changes.put_nowait(active)

    async def refresh(self) -> None:
        """Read the record, apply it and acknowledge it; Redis errors are logged once and the last state kept."""
        try:
            state = await read_generations(self.redis, self.keys)
        except (RedisError, OSError) as exc:
            if not self._failing:
                _log.warning("cannot read the generations record (%s): keeping what this process handles", exc)
            self._failing = True
            return
        self._failing = False
        if state != self.state:
            self.apply(state)
        value = ack_value(state)
        if value != self._acked:
            try:
                await ack_generation(self.redis, self.keys, self.generation, self.cluster_id, value)
            except (RedisError, OSError) as exc:  # acknowledged at the next read instead
                _log.warning("cannot acknowledge the generations record (%s)", exc)
                return
            self._acked = value

    # --- background work ------------------------------------------------------------------------
    def watch(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        """Call ``callback(active)`` (in order, one at a time) whenever this generation starts or stops handling."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)

    async def _notify(self) -> None:
        while True:
            active = await self._changes.get()
            for callback in list(self._watchers):
                try:
                    await callback(active)
                except Exception:
                    _log.exception("a service did not follow the generation switch")

    async def _poll(self) -> None:
        while True:
            involved = self.state is not None and (self.state.next is not None or self.generation != self.state.active)
            await asyncio.sleep(FAST_POLL_S if involved else POLL_S)
            await self.refresh()

    async def start(self) -> None:
        """Read the record once (before the shards connect: a generation that does not handle events yet
        must not resume the active one's sessions), then keep following it."""
        await self.refresh()
        self._tasks.spawn(self._poll(), name="poll")
        self._tasks.spawn(self._notify(), name="notify")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._tasks.cancel()


class WhileActive:
    """Runs ``service`` only while this process's generation handles events (see the module docstring).

    Parameters
    ----------
    service:
        Background work that must run in one generation at a time.
    handover:
        This process's generation.
    """

    __slots__ = ("service", "handover", "running", "_lock")

    def __init__(self, service: Service, handover: Handover) -> None:
        self.service = service
        self.handover = handover
        self.running = False
        self._lock = asyncio.Lock()

    async def _follow(self, active: bool) -> None:
        async with self._lock:
            if active and not self.running:
                await self.service.start()
                self.running = True
            elif not active and self.running:
                self.running = False
                await self.service.stop()

    async def start(self) -> None:
        self.handover.watch(self._follow)
        await self._follow(self.handover.is_active())

    async def stop(self) -> None:
        self.handover.unwatch(self._follow)
        async with self._lock:
            if self.running:
                self.running = False
                await self.service.stop()
