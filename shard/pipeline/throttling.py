"""The *throttle* stage's one interface, and the adapter that puts ``ipc/throttle`` behind it.

The pipeline asks ``await throttle.hit(command, user_id, guild_id, rule)`` and gets a
:class:`ThrottleResult`. Rules come from each command's spec, so the pipeline passes the rule with
every hit. :class:`LocalThrottle` is the in-process implementation (a sliding log per key), used when
Redis throttling is not wired (unit tests, a bot without the IPC layer); the distributed one swaps
in behind the same :class:`Throttle` protocol.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ("ThrottleRule", "ThrottleResult", "Throttle", "LocalThrottle", "Scope", "throttle_subject")

Scope = Literal["user", "guild", "channel", "global"]


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """At most ``rate`` uses per ``per_seconds`` seconds, counted per ``scope``."""

    rate: int
    per_seconds: float
    scope: Scope = "user"

    def __post_init__(self) -> None:
        if self.rate < 1 or self.per_seconds <= 0:
            raise ValueError("a throttle rule needs rate >= 1 and per_seconds > 0")

    def describe(self) -> str:
        per = f"{self.per_seconds:g} s"
        return f"{self.rate} per {per} per {self.scope}"


@dataclass(frozen=True, slots=True)
class ThrottleResult:
    allowed: bool
    retry_after: float = 0.0


class Throttle(Protocol):
    """Counts a use and says whether it is allowed."""

    async def hit(self, command: str, user_id: int, guild_id: int | None, rule: ThrottleRule) -> ThrottleResult: ...


def throttle_subject(rule: ThrottleRule, user_id: int, guild_id: int | None) -> str:
    """What a rule counts against: the user, the guild (DMs count per user) or everyone."""
    if rule.scope == "guild" and guild_id is not None:
        return f"g{guild_id}"
    if rule.scope == "global":
        return "all"
    return f"u{user_id}"


class LocalThrottle:
    """An in-process sliding-log throttle (one process only; exact for a single cluster)."""

    __slots__ = ("_log", "_clock", "_max_keys")

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._log: dict[tuple[str, str], deque[float]] = {}
        self._clock = clock
        self._max_keys = max_keys

    async def hit(self, command: str, user_id: int, guild_id: int | None, rule: ThrottleRule) -> ThrottleResult:
        now = self._clock()
        key = (command, throttle_subject(rule, user_id, guild_id))
        log = self._log.get(key)
        if log is None:
            if len(self._log) >= self._max_keys:
                self._evict(now)
            log = self._log[key] = deque()
        while log and log[0] <= now - rule.per_seconds:
            log.popleft()
        if len(log) >= rule.rate:
            return ThrottleResult(False, max(0.0, log[0] + rule.per_seconds - now))
        log.append(now)
        return ThrottleResult(True, 0.0)

    def _evict(self, now: float) -> None:
        stale = [k for k, v in self._log.items() if not v or v[-1] < now - 3600]
        for k in stale:
            del self._log[k]
        if len(self._log) >= self._max_keys:
            self._log.clear()
