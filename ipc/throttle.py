"""Sliding-log throttles shared by every cluster: per user, per guild, per channel or bot-wide, per command.

The caller passes the rules of each use (:class:`RuleLike`: "at most ``rate`` uses per
``per_seconds`` seconds, counted per ``scope``", where the scope is ``user`` (each user),
``guild`` (each guild; DMs count per user), ``channel`` (each channel) or ``global`` (the whole
bot)). A use is allowed only when every rule allows it, and a refused use counts against none of
them. Which command has which rules, and what a refused user reads, is the command pipeline's
business (``shard/pipeline/throttling.py``).

Each rule is a sliding log: exactly ``rate`` uses fit in any window of ``per_seconds``, which is
what a user told "5 per 10 s" expects. :class:`RedisThrottle` checks and records all of a use's
rules in one atomic Lua script (the Redis clock decides), so many clusters hitting one key at once
allow exactly ``rate``; the hits of one turn of the event loop share one pipeline
(:mod:`ipc.script_batch`). :class:`MemoryThrottle` does the same in one process; the Redis throttle
falls back to it while Redis is unreachable (logged once) and returns to Redis after
``retry_interval``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError

from innkeeper.errors import UsageError

from .script_batch import BatchedScript, ScriptBatch

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .keys import Keys

__all__ = ("ThrottleResult", "Throttle", "RuleLike", "MemoryThrottle", "RedisThrottle", "SCOPES")

_log = logging.getLogger(__name__)

#: What a rule can count per: each user, each guild (DMs per user), each channel, or the whole bot.
SCOPES: tuple[str, ...] = ("user", "guild", "channel", "global")


class RuleLike(Protocol):
    """Anything with a rule's three attributes (the command pipeline's own rule type fits)."""

    @property
    def rate(self) -> int: ...
    @property
    def per_seconds(self) -> float: ...
    @property
    def scope(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ThrottleResult:
    """Whether a use is allowed, and if not, in how many seconds it will be."""

    allowed: bool
    retry_after: float = 0.0


class Throttle(Protocol):
    """Counts a use of ``command`` under ``rules`` and says whether it is allowed."""

    async def hit(self, command: str, user_id: int, guild_id: int | None, rules: Sequence[RuleLike], *,
                  channel_id: int | None = None) -> ThrottleResult: ...


def _subject(scope: str, user_id: int, guild_id: int | None, channel_id: int | None) -> str:
    if scope == "guild" and guild_id is not None:
        return f"g{guild_id}"
    if scope == "channel" and channel_id is not None:
        return f"c{channel_id}"
    if scope == "global":
        return "all"
    return f"u{user_id}"


def _check(command: str, rules: Sequence[RuleLike]) -> None:
    if not isinstance(command, str) or not command or len(command) > 100:
        raise UsageError("a throttled command name is 1 to 100 characters")
    for r in rules:
        if r.scope not in SCOPES or r.rate < 1 or r.per_seconds <= 0:
            raise UsageError(f"not a throttle rule: {r!r}")


class MemoryThrottle:
    """The sliding-log throttle for one process (tests, single cluster, fallback while Redis is down).

    Parameters
    ----------
    clock:
        Monotonic seconds (injected by tests).
    max_keys:
        Keys kept before idle ones are evicted.
    """

    __slots__ = ("_logs", "_clock", "_max_keys")

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._logs: dict[tuple[str, str, str, float], collections.deque[float]] = {}
        self._clock = clock
        self._max_keys = max_keys

    async def hit(self, command: str, user_id: int, guild_id: int | None, rules: Sequence[RuleLike], *,
                  channel_id: int | None = None) -> ThrottleResult:
        _check(command, rules)
        if not rules:
            return ThrottleResult(True)
        now = self._clock()
        logs = []
        retry = 0.0
        for r in rules:
            key = (r.scope, _subject(r.scope, user_id, guild_id, channel_id), command, r.per_seconds)
            log = self._logs.get(key)
            if log is None:
                if len(self._logs) >= self._max_keys:
                    self._evict(now)
                log = self._logs[key] = collections.deque()
            while log and log[0] <= now - r.per_seconds:
                log.popleft()
            if len(log) >= r.rate:
                retry = max(retry, log[len(log) - r.rate] + r.per_seconds - now)
            logs.append(log)
        if retry > 0:
            return ThrottleResult(False, retry)
        for log in logs:
            log.append(now)
        return ThrottleResult(True)

    def _evict(self, now: float) -> None:
        for key in [k for k, log in self._logs.items() if not log or log[-1] <= now - k[3]]:
            del self._logs[key]
        if len(self._logs) >= self._max_keys:
            self._logs.clear()


#: KEYS: one sorted set per rule. ARGV: token, then per rule: rate, period ms.
#: Reply: {1, 0} allowed, or {0, retry-after ms}.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local retry = 0
for i, key in ipairs(KEYS) do
  local rate, per = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - per)
  local count = redis.call('ZCARD', key)
  if count >= rate then
    local oldest = redis.call('ZRANGE', key, count - rate, count - rate, 'WITHSCORES')
    retry = math.max(retry, tonumber(oldest[2]) + per - now)
  end
end
if retry > 0 then
  return {0, math.ceil(retry)}
end
for i, key in ipairs(KEYS) do
  local per = tonumber(ARGV[2 * i + 1])
  redis.call('ZADD', key, now, ARGV[1] .. ':' .. i)
  redis.call('PEXPIRE', key, math.ceil(per))
end
return {1, 0}
"""
_HIT_SCRIPT = BatchedScript(_HIT)


class RedisThrottle:
    """The sliding-log throttle shared by every cluster through Redis.

    Each hit is one call of the ``_HIT`` script; the calls of one turn of the event loop travel in
    one pipeline (:class:`~ipc.script_batch.ScriptBatch`), each still atomic on its own, so a burst
    of commands costs Redis and the cluster a fraction of a round trip per command.

    Parameters
    ----------
    redis, keys:
        The client and the key names.
    fallback:
        Used while Redis is unreachable; a :class:`MemoryThrottle` by default.
    op_timeout:
        Seconds a hit may wait for Redis before the fallback answers.
    retry_interval:
        Seconds to stay on the fallback before trying Redis again.
    max_inflight:
        Pipelines in flight at once; hits made meanwhile wait and leave together, so a burst of
        commands cannot exhaust the client's connection pool.
    """

    def __init__(self, redis: Redis, keys: Keys, *, fallback: Throttle | None = None, op_timeout: float = 0.5,
                 retry_interval: float = 5.0, max_inflight: int = 4) -> None:
        self.redis = redis
        self.keys = keys
        self.batch = ScriptBatch(redis, name="throttle", op_timeout=op_timeout, max_rounds=max_inflight)
        self.fallback: Throttle = fallback or MemoryThrottle()
        self.op_timeout = op_timeout
        self.retry_interval = retry_interval
        self._down_until = 0.0
        # members of the sliding logs: unique per process (a random prefix) and per hit (a counter)
        self._prefix = uuid.uuid4().hex[:16] + ":"
        self._count = itertools.count()

    @property
    def shared(self) -> bool:
        """False while answering from the in-process fallback."""
        return time.monotonic() >= self._down_until

    async def hit(self, command: str, user_id: int, guild_id: int | None, rules: Sequence[RuleLike], *,
                  channel_id: int | None = None) -> ThrottleResult:
        _check(command, rules)
        if not rules:
            return ThrottleResult(True)
        if not self.shared:
            return await self.fallback.hit(command, user_id, guild_id, rules, channel_id=channel_id)
        keys = [self.keys.throttle(r.scope, _subject(r.scope, user_id, guild_id, channel_id),
                                   f"{command}:{r.per_seconds:g}") for r in rules]
        args: list[str] = [f"{self._prefix}{next(self._count)}"]
        for r in rules:
            args += [str(int(r.rate)), f"{r.per_seconds * 1000:.3f}"]
        try:
            async with asyncio.timeout(self.op_timeout):
                allowed, retry_ms = await self.batch.call(_HIT_SCRIPT, keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            if self._down_until == 0.0:
                _log.warning("Redis is unreachable (%s); throttling per process until it is back", exc)
            self._down_until = time.monotonic() + self.retry_interval
            return await self.fallback.hit(command, user_id, guild_id, rules, channel_id=channel_id)
        if self._down_until:
            _log.warning("Redis is reachable again; throttling is shared across clusters again")
            self._down_until = 0.0
        return ThrottleResult(bool(allowed), int(retry_ms) / 1000.0)

    async def start(self) -> None:
        """Nothing to start: pipelines are sent as hits come."""

    async def stop(self) -> None:
        """Stop sending: hits queued or in flight then are answered by the in-process fallback."""
        await self.batch.close()
