"""Gateway backpressure: a cluster's shards stop reading for a moment while the work they would add has no room.

A burst at full speed reaches the bot faster than it can finish the work each event starts. Every
event discord.py hands a listener becomes a task, and a command's task lives until its reply went
out; parked messages wait for their guild's configuration (:mod:`shard.lean_messages`). Nothing in
discord.py bounds either, so a burst of 20,000 messages left thousands of tasks alive at once, and
CPython keeps most of such a high-water mark resident after it (``bench memory``).

:class:`ReadGate` bounds them where the work comes in. Each :class:`Bounded` counter is full at its
limit and has room again at half of it; after each gateway message a shard's read loop waits while
a counter it watches is full, at most ``max_pause_s`` (1 s) per message, so that heartbeat acks are
read long before discord.py's 60 s zombie check and an interaction waiting in the socket is late by
a second at most. The gateway buffers what is not read, as it does for any slow client. When the
work does not drain within a pause, reading goes on (the counters are a brake, not a wall).

The hook: discord.py's shard loop awaits ``DiscordWebSocket.received_message`` for each gateway
message; :meth:`ReadGate.install` wraps that method once per process, and the wrapper finds the
gate of the websocket's client through its connection state (a websocket of a client without a
gate is not touched). The same wrapper skips a gateway message discord.py itself cannot read
(undecodable JSON, a READY without ``session_id``): discord.py would end the client for it. It is
counted as a failed event of stage ``frame`` (:mod:`shard.event_guard`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from discord.gateway import DiscordWebSocket
from prometheus_client import Counter, Gauge

from .event_guard import event_failed

if TYPE_CHECKING:
    from discord.ext import commands

__all__ = ("Bounded", "ReadGate", "PAUSED_SECONDS", "EVENT_TASKS")

_log = logging.getLogger(__name__)

#: Seconds the shards' gateway reads waited for room, by the counter that was full.
PAUSED_SECONDS = Counter("innkeeper_gateway_paused_seconds", "Seconds gateway reads waited for room, by reason",
                         ["reason"])
#: Tasks discord.py started for event listeners (``on_message``…) that have not finished.
EVENT_TASKS = Gauge("innkeeper_event_tasks", "Event listener tasks discord.py started that have not finished")

#: discord.py connection state → the gate of its client.
_GATES: weakref.WeakKeyDictionary[Any, ReadGate] = weakref.WeakKeyDictionary()


class Bounded:
    """A count of pending work with a limit: full at ``limit``, room again at half of it.

    Parameters
    ----------
    name:
        What it counts (the ``reason`` label of ``innkeeper_gateway_paused_seconds_total``).
    limit:
        The count at which it is full (0: never full).
    """

    __slots__ = ("name", "limit", "count", "_room")

    def __init__(self, name: str, limit: int) -> None:
        if limit < 0:
            raise ValueError("a limit is 0 or more")
        self.name = name
        self.limit = limit
        self.count = 0
        self._room = asyncio.Event()
        self._room.set()

    @property
    def full(self) -> bool:
        return self.limit > 0 and self.count >= self.limit

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.full:
            self._room.clear()

    def remove(self, n: int = 1) -> None:
        self.count -= n
        if self.count <= self.limit // 2:
            self._room.set()

    async def wait_room(self) -> None:
        """Wait until the count is at most half the limit (at once when it is not full)."""
        if self.full:  # add() cleared the event on reaching the limit; remove() sets it at half
            await self._room.wait()


class ReadGate:
    """Pauses a cluster's gateway reads while a watched counter is full (see the module docstring).

    Parameters
    ----------
    max_pause_s:
        The longest one gateway message holds its shard's reads (0: never pause).
    event_tasks:
        The limit of unfinished event listener tasks (:meth:`install` counts them; 0: no limit).
    """

    __slots__ = ("max_pause_s", "event_tasks", "_watched", "_stopped")

    def __init__(self, *, max_pause_s: float = 1.0, event_tasks: int = 256) -> None:
        if max_pause_s < 0:
            raise ValueError("max_pause_s is 0 or more")
        self.max_pause_s = max_pause_s
        #: discord.py's event listener tasks that have not finished.
        self.event_tasks = Bounded("event_tasks", event_tasks)
        self._watched: list[Bounded] = [self.event_tasks]
        self._stopped = False

    def watch(self, counter: Bounded) -> None:
        """Pause reads while ``counter`` is full too."""
        self._watched.append(counter)

    @property
    def full(self) -> bool:
        """Whether a read would pause now."""
        return not self._stopped and any(c.full for c in self._watched)

    async def room(self) -> None:
        """Wait while a watched counter is full, at most ``max_pause_s`` in all."""
        if self._stopped or self.max_pause_s == 0:
            return
        deadline = time.monotonic() + self.max_pause_s
        for counter in self._watched:
            if not counter.full:
                continue
            started = time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, deadline - started)):
                    await counter.wait_room()
            except TimeoutError:
                return
            finally:
                PAUSED_SECONDS.labels(counter.name).inc(time.monotonic() - started)

    def install(self, bot: commands.AutoShardedBot) -> None:
        """Count ``bot``'s event listener tasks, and make its shards' reads wait for room."""
        state = getattr(bot, "_connection", None)
        if state is None:
            _log.warning("discord.py has no connection state here: gateway reads never pause")
            return
        _GATES[state] = self
        schedule: Callable[..., asyncio.Task[Any]] = bot._schedule_event
        counter = self.event_tasks

        def finished(_: asyncio.Task[Any]) -> None:
            counter.remove()
            EVENT_TASKS.dec()

        def counted(coro: Callable[..., Any], event_name: str, *args: Any, **kwargs: Any) -> asyncio.Task[Any]:
            task = schedule(coro, event_name, *args, **kwargs)
            counter.add()
            EVENT_TASKS.inc()
            task.add_done_callback(finished)
            return task

        bot._schedule_event = counted  # type: ignore[method-assign]
        _install_read_pause()

    async def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        """Never pause again (the cluster is closing)."""
        self._stopped = True


#: What discord.py's ``received_message`` raises on a gateway message it cannot read (undecodable JSON, a READY
#: without ``session_id``…). Parsers' own errors never get here (the tracker catches them); reconnect signals
#: (``ReconnectWebSocket``) and closed connections are none of these, and pass on to discord.py.
_UNREADABLE = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _install_read_pause() -> None:
    """Wrap ``DiscordWebSocket.received_message`` once per process: skip a message discord.py cannot read
    (counted, :mod:`shard.event_guard`), and after each message wait for room."""
    original: Callable[[DiscordWebSocket, Any], Awaitable[None]] = DiscordWebSocket.received_message
    if getattr(original, "_innkeeper_read_gate", False):
        return

    @functools.wraps(original)  # __wrapped__: what checks discord.py's own method reads (shard/true_latency.py)
    async def received_message(self: DiscordWebSocket, msg: Any, /) -> None:
        try:
            await original(self, msg)
        except _UNREADABLE as exc:  # a message discord.py cannot read: skip it, the shard reads on
            event_failed("unknown", "frame", exc, shard_id=self.shard_id)
        state = getattr(self, "_connection", None)
        gate = _GATES.get(state) if state is not None else None
        if gate is not None and gate.full:
            await gate.room()

    received_message._innkeeper_read_gate = True  # type: ignore[attr-defined]
    DiscordWebSocket.received_message = received_message  # type: ignore[method-assign]
