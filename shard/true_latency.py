"""True gateway latency: heartbeats timed from the moment they go out, not from after the send returned.

discord.py's keep-alive thread (``discord.gateway.KeepAliveHandler.run``) hands each heartbeat to
the event loop, blocks until the send completed, and only then stamps ``_last_send``. On a fast
link the loop reads the HEARTBEAT_ACK before the thread wakes up again, so ``ack()`` measures
against the *previous* heartbeat: every shard reports a latency of one heartbeat interval
(41,250 ms on Discord), and discord.py logs "Can't keep up, shard ID N websocket is 41.3s behind"
on every beat. ``ShardInfo.latency``, ``bot.latencies``, the tracker's ``latency_s`` (heartbeat
records, ``innkeeper status``, the status page, ``innkeeper_gateway_latency_seconds``) and
``/ping`` all read that figure.

:class:`StampedKeepAlive` stamps the send time in ``get_payload()``, which every heartbeat goes
through right before it is sent (the keep-alive thread's beats, the one sent on HELLO, and the
ones Discord asks for with op 1), and computes the latency from that stamp on ACK. The time
counted therefore includes the hop from the keep-alive thread onto the event loop: a loop that
runs late shows as latency, as it delays the reading of the ACK as well. An ACK later than
``INNKEEPER_GATEWAY_BEHIND_WARN`` (10 s by default, discord.py's threshold) logs discord.py's
"Can't keep up" warning and counts in ``innkeeper_gateway_behind_total``.

Only once the connection has a session: while a shard waits in the identify queue, discord.py
does not read its socket (the IDENTIFY goes out from inside the connect), so the ACKs of that wait
are read late by design and say nothing about the link. They set neither the warning nor the
latency (unknown until then); on READY each shard sends one heartbeat at once
(:meth:`TrueLatency.check`), so its latency is known within a round trip rather than up to a
heartbeat interval later.

Why a process-wide replacement of ``discord.gateway.KeepAliveHandler``: discord.py creates the
handler in ``DiscordWebSocket.received_message`` on HELLO, looking the module-level name up at
call time, and every gateway connection goes through there: the first connect, discord.py's own
``Shard.reidentify`` / ``reconnect`` (which call ``DiscordWebSocket.from_client`` directly) and
our resumes. Replacing that one name covers them all without touching discord.py's files or
copying its keep-alive loop. A per-connection hook (``_update_references``, as
:mod:`shard.fair_reader` uses) sees the socket before HELLO, when the handler does not exist
yet; after HELLO its thread is already running. Voice connections use their own handler class
and are left alone.

If discord.py's internals move, this says so loudly instead of silently reporting wrong figures:
:meth:`TrueLatency.install` checks the code it relies on (error log,
``innkeeper_gateway_latency_fix_installed`` 0), and every READY or RESUMED shard whose handler is
not a :class:`StampedKeepAlive` is logged and counted (``innkeeper_gateway_latency_unfixed_total``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import discord.gateway
from discord.gateway import DiscordWebSocket, KeepAliveHandler
from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from discord.ext import commands

__all__ = ("StampedKeepAlive", "TrueLatency", "problems")

_log = logging.getLogger(__name__)

BEHIND = Counter("innkeeper_gateway_behind_total",
                 "Heartbeat ACKs that came later than INNKEEPER_GATEWAY_BEHIND_WARN (logged \"Can't keep up\")",
                 ["shard"])
INSTALLED = Gauge("innkeeper_gateway_latency_fix_installed",
                  "1 when heartbeats are timed from their send (true gateway latency); 0 when discord.py's "
                  "keep-alive changed and latencies may be off by a heartbeat interval")
UNFIXED = Counter("innkeeper_gateway_latency_unfixed_total",
                  "Gateway connections READY or RESUMED whose keep-alive handler is not the stamping one "
                  "(their latency may be off by a heartbeat interval)")


class StampedKeepAlive(KeepAliveHandler):
    """discord.py's keep-alive handler, timing each heartbeat from the moment it is sent.

    Only ``get_payload`` and ``ack`` differ from discord.py's; the thread's loop is discord.py's own.
    """

    #: Seconds after which an ACK logs "Can't keep up" (:meth:`TrueLatency.install` sets it).
    behind_after_s: ClassVar[float] = 10.0
    #: The clock discord.py uses for its own stamps.
    clock = staticmethod(time.perf_counter)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: When each heartbeat not acknowledged yet was handed over for sending (``clock()``), oldest first:
        #: Discord acknowledges in order, so an ACK is timed against its own heartbeat even when two are in
        #: flight (the one sent on READY and the thread's).
        self.in_flight: deque[float] = deque(maxlen=16)
        #: When the last heartbeat was handed over for sending.
        self.sent_at: float = self.clock()

    def get_payload(self) -> dict[str, Any]:
        self.sent_at = self.clock()  # every heartbeat is built right before it is sent
        self.in_flight.append(self.sent_at)
        return super().get_payload()

    def ack(self) -> None:
        ack_time = self.clock()
        self._last_ack = ack_time
        sent_at = self.in_flight.popleft() if self.in_flight else self.sent_at
        if getattr(self.ws, "session_id", None) is None:
            # Before READY nobody reads the socket while the shard waits for its turn to identify (discord.py
            # sends IDENTIFY from inside the connect): the ACKs of that wait are read late by design.
            return
        self.latency = ack_time - sent_at
        if self.latency > self.behind_after_s:
            BEHIND.labels(str(self.shard_id)).inc()
            _log.warning(self.behind_msg, self.shard_id, self.latency)


def problems() -> list[str]:
    """What in the installed discord.py no longer matches what :class:`StampedKeepAlive` relies on.

    Empty when the fix applies: HELLO creates the handler by its module-level name, the
    keep-alive thread builds each heartbeat with ``get_payload()``, ``ack()`` is how an ACK
    reaches it, and a socket's ``latency`` is its handler's.
    """
    found: list[str] = []

    def names(func: Any) -> tuple[str, ...]:
        code = getattr(func, "__code__", None)
        return tuple(code.co_names) if code is not None else ()

    current = getattr(discord.gateway, "KeepAliveHandler", None)
    if current is not KeepAliveHandler and current is not StampedKeepAlive:
        found.append(f"discord.gateway.KeepAliveHandler is {current!r}, replaced by someone else")
    received = inspect.unwrap(DiscordWebSocket.received_message)  # discord.py's own, under our wrappers
    if "KeepAliveHandler" not in names(received):
        found.append("DiscordWebSocket.received_message no longer creates KeepAliveHandler by name")
    if "get_payload" not in names(KeepAliveHandler.run):
        found.append("KeepAliveHandler.run no longer builds heartbeats with get_payload()")
    if "ack" not in names(received):
        found.append("DiscordWebSocket.received_message no longer calls the handler's ack()")
    latency = getattr(DiscordWebSocket, "latency", None)
    if not isinstance(latency, property) or "latency" not in names(latency.fget):
        found.append("DiscordWebSocket.latency no longer reads the keep-alive handler's latency")
    return found


class TrueLatency:
    """Installs :class:`StampedKeepAlive` for the process and checks every shard's connection uses it.

    Parameters
    ----------
    behind_after_s:
        ``INNKEEPER_GATEWAY_BEHIND_WARN``: an ACK later than this logs "Can't keep up".
    websocket:
        A shard's live ``DiscordWebSocket`` by shard id (:meth:`shard.tracker.ShardTracker.websocket`).
    """

    __slots__ = ("behind_after_s", "websocket", "installed")

    def __init__(self, behind_after_s: float, websocket: Callable[[int], Any]) -> None:
        if behind_after_s <= 0:
            raise ValueError("behind_after_s must be positive")
        self.behind_after_s = behind_after_s
        self.websocket = websocket
        #: Whether the stamping handler is in place.
        self.installed = False

    def install(self, bot: commands.AutoShardedBot) -> bool:
        """Put :class:`StampedKeepAlive` in place (for every gateway connection of this process) and watch ``bot``.

        Returns whether it is in place; when discord.py changed, logs an error naming what, sets
        ``innkeeper_gateway_latency_fix_installed`` to 0 and leaves discord.py's handler alone.
        """
        found = problems()
        if found:
            _log.error("cannot time gateway heartbeats from their send; shard latencies may read one heartbeat "
                       "interval (41 s on Discord) and discord.py may warn \"Can't keep up\" falsely: %s",
                       "; ".join(found))
            INSTALLED.set(0)
            self.installed = False
        else:
            StampedKeepAlive.behind_after_s = self.behind_after_s
            discord.gateway.KeepAliveHandler = StampedKeepAlive  # type: ignore[misc]
            INSTALLED.set(1)
            self.installed = True
        bot.add_listener(self.check, "on_shard_connect")
        bot.add_listener(self.check, "on_shard_resumed")
        return self.installed

    async def check(self, shard_id: int) -> None:
        """On READY or RESUMED: measure the shard's latency now, or log and count a connection whose
        heartbeats are not timed by :class:`StampedKeepAlive`."""
        ws = self.websocket(shard_id)
        handler = getattr(ws, "_keep_alive", None)
        if handler is None:
            return
        if isinstance(handler, StampedKeepAlive):
            if handler.latency == float("inf"):  # the ACKs read while identifying did not count
                try:
                    await ws.send_heartbeat(handler.get_payload())
                except Exception as exc:  # the connection dropped meanwhile: its next one measures
                    _log.debug("shard %s: no heartbeat on READY (%r)", shard_id, exc)
            return
        UNFIXED.inc()
        _log.error("shard %s: its gateway connection times heartbeats with %s, not %s; its latency may read one "
                   "heartbeat interval", shard_id, type(handler).__qualname__, StampedKeepAlive.__qualname__)
