"""One bad gateway event never ends a shard: the event that raised is counted, logged and skipped.

discord.py calls one parser per dispatch from ``DiscordWebSocket.received_message``
(``self._discord_parsers[event](data)``). An exception there leaves ``poll_event``, and the shard's
worker then *terminates the client*: every shard of the cluster stops, and supervisord restarts
the process into the same input. Against a Discord-compatible server nobody here wrote, a single
MESSAGE_CREATE whose member ``roles`` were objects instead of ids did exactly that.

The catches, each free while nothing raises (a ``try`` costs nothing in CPython 3.11):

========================  ======================================================================
stage                     where
========================  ======================================================================
``parse``                 the tracker's wrapper of every discord.py parser
                          (:mod:`shard.tracker`, the outermost wrapper, so the lean message filter,
                          early shedding and the READY hooks are inside it), and the parked
                          MESSAGE_CREATEs the lean filter parses later (:mod:`shard.lean_messages`)
``frame``                 the read gate's wrapper of ``received_message`` (:mod:`shard.read_gate`):
                          a gateway message discord.py itself cannot read (undecodable JSON, a
                          READY without ``session_id``, a HELLO without ``heartbeat_interval``)
``listener``              ``ClusterBot.on_error``: an event listener that raised (discord.py already
                          survives those; they are counted and logged the same way)
========================  ======================================================================

Each failure increments ``innkeeper_events_failed_total{event, stage}`` and is logged at ERROR with
the event type, the shard id when it can be told, and the code ``E2008``. Logs stay readable under a
flood of bad input: the traceback of an (event, stage) is logged at most once per minute; the
failures in between are only counted, and the next line logged says how many there were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from innkeeper.errors import ErrorCode

__all__ = ("FAILED", "FailureLog", "event_failed", "shard_of")

_log = logging.getLogger(__name__)

#: Gateway events skipped because parsing or handling them raised.
FAILED = Counter("innkeeper_events_failed", "Gateway events skipped because parsing or handling them raised, "
                 "by event type and stage (parse, frame, listener)", ["event", "stage"])


class FailureLog:
    """Decides which failures are logged in full: one per key per ``every_s``, the others counted.

    Parameters
    ----------
    every_s:
        The shortest time between two logged failures of one key.
    clock:
        Monotonic seconds (tests pass a fake one).
    """

    __slots__ = ("every_s", "clock", "_next", "_skipped")

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._next: dict[tuple[str, str], float] = {}
        self._skipped: dict[tuple[str, str], int] = {}

    def admit(self, key: tuple[str, str]) -> int | None:
        """Whether to log this failure of ``key`` now: the failures not logged since the last one, or None."""
        now = self.clock()
        if now < self._next.get(key, now):
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        self._next[key] = now + self.every_s
        return self._skipped.pop(key, 0)


_LOG = FailureLog()
#: Events whose payload is the guild itself (its ``id`` is the guild id).
_GUILD_ITSELF = frozenset({"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"})


def shard_of(event: str, data: Any, shard_count: int | None) -> int | None:
    """The shard a dispatch payload came in on, when the payload tells (its guild, or READY's ``shard``).

    Only called once something failed; never raises.
    """
    if not isinstance(data, dict):
        return None
    try:
        shard = data.get("shard")
        if event == "READY" and isinstance(shard, list) and shard:
            return int(shard[0])
        guild_id = data.get("id") if event in _GUILD_ITSELF else data.get("guild_id")
        if guild_id is None:
            return None
        return (int(guild_id) >> 22) % shard_count if shard_count else 0
    except (TypeError, ValueError):
        return None


def event_failed(event: str, stage: str, exc: BaseException, *, shard_id: int | None = None,
                 log: FailureLog | None = None) -> None:
    """Count one skipped event, and log it (with its traceback) unless its kind was logged under a minute ago.

    Parameters
    ----------
    event:
        The event type (``MESSAGE_CREATE``), or the listener's name for the ``listener`` stage.
    stage:
        ``parse``, ``frame`` or ``listener`` (see the module docstring).
    exc:
        What it raised.
    shard_id:
        The shard it came in on, when known.
    log:
        The failure log deciding what is logged (the process's own by default).
    """
    FAILED.labels(event, stage).inc()
    skipped = (log or _LOG).admit((event, stage))
    if skipped is None:
        return
    code = ErrorCode.GATEWAY_EVENT_FAILED.value
    more = f" ({skipped} more since the last one logged)" if skipped else ""
    _log.error("[%s] %s failed (%s) on shard %s: the event was skipped, the shard runs on%s", code, event, stage,
               "?" if shard_id is None else shard_id, more, exc_info=exc,
               extra={"error_code": code, "event": event, "stage": stage, "shard_id": shard_id})
