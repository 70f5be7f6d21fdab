"""Refused attempts at audited commands, written as one audit row per user and command per window.

The audit log is an append-only hash chain read newest first (``/audit recent``), so one row per
refused attempt would let a member bury the real entries under their own. :class:`DeniedAttempts`
counts the refusals instead: the first refusal of a ``(server, user, action)`` opens a window of
``window_s`` seconds, later ones in it only add to its count, and when the window has closed one row
is written with ``details = {"outcome": "denied", "attempts": n, "first_at", "last_at", ...}`` (the
arguments, channel and level of the first attempt). A periodic flush writes closed windows; stopping
writes every open one, so nothing counted is lost at shutdown.

Counting costs a dictionary entry per open window; beyond ``max_open`` windows new ones are dropped
and counted (``innkeeper_audit_denials_dropped_total``) rather than grow without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter

from innkeeper.services import BackgroundTasks

from .command_metrics import PIPELINE_FAILURES
from .events import AuditEvent

if TYPE_CHECKING:
    from .events import AuditSink

__all__ = ("DeniedAttempts", "DENIAL_WINDOW_S")

_log = logging.getLogger(__name__)

#: Seconds refused attempts of one user at one command are gathered into one audit row.
DENIAL_WINDOW_S = 60.0

DROPPED = Counter("innkeeper_audit_denials_dropped_total",
                  "Refused attempts not counted because too many denial windows were open")

_Key = tuple[int | None, int, str]


@dataclass(slots=True)
class _Window:
    first: AuditEvent
    opened: float
    first_at: datetime
    last_at: datetime
    attempts: int = 1


class DeniedAttempts:
    """Gathers denied attempts into one audit row per ``(guild, actor, action)`` per window.

    Parameters
    ----------
    audit:
        Where the rows go (the audit log).
    window_s:
        How long a window stays open after its first attempt.
    max_open:
        Open windows kept at most.
    clock:
        Monotonic seconds (tests inject one).
    """

    def __init__(self, audit: AuditSink, *, window_s: float = DENIAL_WINDOW_S, max_open: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0 or max_open < 1:
            raise ValueError("a denial window and the number of open windows must be positive")
        self.audit = audit
        self.window_s = window_s
        self.max_open = max_open
        self._clock = clock
        self._open: dict[_Key, _Window] = {}
        self._closed: list[_Window] = []
        self._tasks = BackgroundTasks("audit-denials")

    @property
    def pending(self) -> int:
        """Attempts counted and not written yet."""
        return sum(w.attempts for w in self._open.values()) + sum(w.attempts for w in self._closed)

    def add(self, event: AuditEvent) -> None:
        """Count one denied attempt (``event`` is what one row per attempt would have been)."""
        key = (event.guild_id, event.actor_id, event.action)
        now, stamp = self._clock(), datetime.now(UTC)
        window = self._open.get(key)
        if window is not None and now - window.opened >= self.window_s:
            self._closed.append(self._open.pop(key))
            window = None
        if window is not None:
            window.attempts += 1
            window.last_at = stamp
            return
        if len(self._open) >= self.max_open:
            DROPPED.inc()
            return
        self._open[key] = _Window(event, now, stamp, stamp)

    async def flush(self, *, everything: bool = False) -> int:
        """Write the closed windows (every window with ``everything``); returns the rows written."""
        now = self._clock()
        for key in [k for k, w in self._open.items() if everything or now - w.opened >= self.window_s]:
            self._closed.append(self._open.pop(key))
        ready, self._closed = self._closed, []
        written = 0
        for window in ready:
            try:
                await self.audit.append(self._row(window))
                written += 1
            except Exception:
                PIPELINE_FAILURES.labels("audit").inc()
                _log.exception("writing %d denied attempt(s) at %s to the audit log failed", window.attempts,
                               window.first.action)
        return written

    def _row(self, window: _Window) -> AuditEvent:
        first = window.first
        details = dict(first.details)
        details.update(outcome="denied", attempts=window.attempts, window_s=self.window_s,
                       first_at=window.first_at.isoformat(timespec="seconds"),
                       last_at=window.last_at.isoformat(timespec="seconds"))
        return AuditEvent(guild_id=first.guild_id, actor_id=first.actor_id, action=first.action,
                           target_id=first.target_id, target=first.target, details=details)

    async def start(self) -> None:
        """Flush closed windows every quarter window."""
        self._tasks.every(self.window_s / 4, self.flush, name="flush", run_first=False)

    async def stop(self) -> None:
        """Stop flushing, then write every window still open."""
        await self._tasks.cancel()
        await self.flush(everything=True)
