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

A user erased (``/privacy delete``, ``innkeeper erase-user``) while their refusals are still counted
here, in this cluster or any other, must not reappear in the audit log by their id afterwards: the
cluster where they erase themselves writes their windows first (:meth:`DeniedAttempts.settle_user`,
so the erasure pseudonymises them), and every flush drops the windows of users erased after the
window's first attempt (``erased_since``, the database's record of erasures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
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
#: ``erased_since(user_ids, since)``: those of the users erased at or after ``since``, with when.
ErasedSince = Callable[[Collection[int], datetime], Awaitable[dict[int, datetime]]]


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
    erased_since:
        Who was erased since when (``db.privacy.erased_since``); without it nothing is dropped.
    """

    def __init__(self, audit: AuditSink, *, window_s: float = DENIAL_WINDOW_S, max_open: int = 10_000,
                 clock: Callable[[], float] = time.monotonic, erased_since: ErasedSince | None = None) -> None:
        if window_s <= 0 or max_open < 1:
            raise ValueError("a denial window and the number of open windows must be positive")
        self.audit = audit
        self.erased_since = erased_since
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

    async def settle_user(self, user_id: int) -> int:
        """Write ``user_id``'s windows now, whatever their age (before their erasure); returns the rows."""
        for key in [k for k in self._open if k[1] == user_id]:
            self._closed.append(self._open.pop(key))
        mine = [w for w in self._closed if w.first.actor_id == user_id]
        self._closed = [w for w in self._closed if w.first.actor_id != user_id]
        return await self._write(mine)

    async def flush(self, *, everything: bool = False) -> int:
        """Write the closed windows (every window with ``everything``); returns the rows written."""
        now = self._clock()
        for key in [k for k, w in self._open.items() if everything or now - w.opened >= self.window_s]:
            self._closed.append(self._open.pop(key))
        ready, self._closed = self._closed, []
        return await self._write(await self._without_erased(ready))

    async def _without_erased(self, windows: list[_Window]) -> list[_Window]:
        """``windows`` less those of users erased after their first attempt (or all, when that cannot be told)."""
        if not windows or self.erased_since is None:
            return windows
        try:
            erased = await self.erased_since({w.first.actor_id for w in windows}, min(w.first_at for w in windows))
        except Exception:  # the database is down: keep them for the next flush rather than write blind
            _log.warning("cannot tell whether %d denial window(s) belong to erased users; keeping them", len(windows))
            self._closed.extend(windows)
            return []
        kept = [w for w in windows if not (w.first.actor_id in erased and erased[w.first.actor_id] >= w.first_at)]
        if len(kept) < len(windows):
            _log.info("dropped %d denial window(s) of erased users", len(windows) - len(kept))
        return kept

    async def _write(self, ready: list[_Window]) -> int:
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
