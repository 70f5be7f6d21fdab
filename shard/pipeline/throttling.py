"""The *throttle* stage's interface, with ``ipc.throttle`` behind it.

The pipeline depends only on :class:`Throttle`: ``await throttle.hit(command, user_id, guild_id,
rule)`` answers a :class:`Verdict`. Each command's :class:`ThrottleRule` comes from its spec and
is passed with every hit. In a cluster the implementation is ``ipc.throttle.RedisThrottle`` (one
atomic sliding log per key in Redis, shared by every cluster, with an in-process fallback while
Redis is unreachable); tests use ``ipc.throttle.MemoryThrottle`` or a fake.
"""

from __future__ import annotations

from typing import Protocol

from ipc.throttle import MemoryThrottle, RedisThrottle, ThrottleRule, throttle_message

__all__ = ("ThrottleRule", "Throttle", "Verdict", "MemoryThrottle", "RedisThrottle", "throttle_message")


class Verdict(Protocol):
    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after(self) -> float: ...


class Throttle(Protocol):
    """Counts a use of ``command`` under ``rule`` and says whether it is allowed."""

    async def hit(self, command: str, user_id: int, guild_id: int | None, rule: ThrottleRule) -> Verdict: ...
