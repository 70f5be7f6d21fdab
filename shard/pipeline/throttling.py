"""The *throttle* stage: each command's rule, what a refused user reads, and the interface behind it.

A :class:`ThrottleRule` says "at most ``rate`` uses per ``per_seconds`` seconds, counted per
``scope``": ``user`` (each user), ``guild`` (each guild; DMs count per user), ``channel`` (each
channel) or ``global`` (the whole bot). Each command's rule comes from its spec and is passed with
every hit. The pipeline depends only on :class:`Throttle`; in a cluster the implementation is
``ipc.throttle.RedisThrottle`` (one atomic sliding log per key in Redis, shared by every cluster,
with an in-process fallback while Redis is unreachable); tests use ``ipc.throttle.MemoryThrottle``
or a fake. :func:`throttle_message` is the refusal a user reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from innkeeper.errors import UsageError
from ipc.throttle import SCOPES

__all__ = ("ThrottleRule", "Throttle", "Verdict", "throttle_message", "Scope")

Scope = Literal["user", "guild", "channel", "global"]


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """At most ``rate`` uses per ``per_seconds`` seconds, counted per ``scope``.

    Raises
    ------
    UsageError
        For a rate that is not a positive integer, a period outside (0, 7 days], or an unknown scope.
    """

    rate: int
    per_seconds: float
    scope: Scope = "user"

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or self.rate < 1:
            raise UsageError(f"a throttle rate must be a positive integer, got {self.rate!r}")
        if not (0 < self.per_seconds <= 86_400 * 7):
            raise UsageError(f"a throttle period must be in (0, 7 days], got {self.per_seconds!r}")
        if self.scope not in SCOPES:
            raise UsageError(f"a throttle scope is one of {', '.join(SCOPES)}; got {self.scope!r}")

    def describe(self) -> str:
        """``"5 per 10 s per user"``, for help texts."""
        return f"{self.rate} per {self.per_seconds:g} s per {self.scope}"


def throttle_message(retry_after: float) -> str:
    """The user-facing refusal, with the wait rounded up to whole seconds (at least 1)."""
    return f"You're doing that too often — try again in {max(1, math.ceil(retry_after - 1e-9))} s."


class Verdict(Protocol):
    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after(self) -> float: ...


class Throttle(Protocol):
    """Counts a use of ``command`` under ``rules`` and says whether it is allowed."""

    async def hit(self, command: str, user_id: int, guild_id: int | None,
                  rules: Sequence[ThrottleRule]) -> Verdict: ...
