"""The shared identify queue: Discord's identify rate, over every cluster, at the physical floor.

Discord lets each bucket ``shard_id % max_concurrency`` IDENTIFY one shard per window (5 s);
going faster earns INVALID_SESSION. Every cluster calls :meth:`IdentifyQueue.acquire` from
``before_identify_hook``. For each bucket one Lua script, atomically:

* drops waiters whose lease ran out (a crashed process must not block the bucket for long);
* registers the caller in the bucket's sorted set of waiters (score = shard id) and renews its lease;
* grants the bucket's lock (``SET NX PX``) only to the **lowest** waiting shard id, so a bucket
  serves shards in ascending order across every cluster, as Discord recommends;
* applies the identify budget guard: when the stored ``session_start_limit.remaining`` is at or
  below the reserve, it refuses rather than spend the day's last identifies in a crash loop.

When the window starts. Discord measures the window from the moment *it* receives the IDENTIFY,
and that moment is not the moment we sent it: a loaded receiver stamps one IDENTIFY late and the
next one on time, and no fixed margin is safe against that. What is certain is causality: Discord
stamped the IDENTIFY before it sent READY. So the lock is granted *pending*, for a long hold
(:attr:`IdentifyQueue.pending_ms`: one window plus the margin plus ``max(window, 1 s)``), and
when the shard's READY arrives the process calls :meth:`IdentifyQueue.confirm`, which re-arms
the lock for exactly one window (plus ``margin``, 0 by default) from that moment. The next
IDENTIFY of the bucket therefore reaches Discord at least one window after the previous one was
stamped, whatever the load on either side; what it costs per window is one READY round trip, not
a guessed margin. A shard whose IDENTIFY got no READY (refused, connection lost, process died)
leaves the bucket to the pending hold, which then expires on its own.

Waiters poll, sleeping for the lock's remaining PTTL, so the next shard takes the lock within a
few milliseconds of its expiry and no one busy-loops. While the lock is pending the head of the
queue sleeps until the earliest moment the window can end and then polls every couple of
milliseconds until READY re-arms it. Time comes from Redis (``TIME``, ``PX``), so hosts with
skewed clocks still agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from innkeeper.errors import ErrorCode, InnkeeperError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = ("IdentifyQueue", "IdentifyTicket", "IdentifyBudget", "IdentifyBudgetExhausted", "bucket_of", "store_budget",
           "read_budget", "mark_cold_start", "COLD_START_ELAPSED")

_log = logging.getLogger(__name__)

#: How often the head of a bucket's queue polls while the lock waits for its READY.
_POLL_MS = 2

# KEYS: lock, queue (zset), leases (hash), budget (hash)
# ARGV: shard id, lock ms, lease ms, reserve
# Returns {1, remaining_or_-1, 0} granted; {0, wait_ms, head} wait; {-1, remaining, reset_in_ms} refused.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local shard = ARGV[1]
local hold = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local budget = redis.call('HMGET', KEYS[4], 'remaining', 'reset_at')
local known = budget[1] and budget[2]
if known then
  local remaining = tonumber(budget[1])
  local reset_at = tonumber(budget[2])
  if reset_at > now and remaining <= reserve then
    redis.call('ZREM', KEYS[2], shard)
    redis.call('HDEL', KEYS[3], shard)
    return {-1, remaining, reset_at - now}
  end
end
redis.call('ZADD', KEYS[2], tonumber(shard), shard)
redis.call('HSET', KEYS[3], shard, now + lease)
redis.call('PEXPIRE', KEYS[2], lease * 2)
redis.call('PEXPIRE', KEYS[3], lease * 2)
local head = shard
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local deadline = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  if deadline < now then
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[3], m)
  else
    head = m
    break
  end
end
if head ~= shard then
  return {0, redis.call('PTTL', KEYS[1]), tonumber(head)}
end
if redis.call('SET', KEYS[1], shard, 'NX', 'PX', hold) then
  redis.call('ZREM', KEYS[2], shard)
  redis.call('HDEL', KEYS[3], shard)
  local left = -1
  if known then
    left = redis.call('HINCRBY', KEYS[4], 'remaining', -1)
  end
  return {1, left, 0}
end
return {0, redis.call('PTTL', KEYS[1]), tonumber(shard)}
"""

# KEYS: budget. ARGV: total, remaining, reset_after_ms, max_concurrency.
_STORE_BUDGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reset_after = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'remaining', ARGV[2], 'reset_at', now + reset_after,
           'max_concurrency', ARGV[4], 'updated_at', now)
redis.call('PEXPIRE', KEYS[1], math.max(reset_after, 1))
return now
"""

# KEYS: lock. ARGV: shard id, hold ms. The shard's IDENTIFY was acknowledged (READY): its window
# ends one hold from now. Re-arm the lock if it is still the shard's; take it again if the pending
# hold ran out meanwhile (the IDENTIFY was stamped no earlier than that); leave another's alone.
_CONFIRM = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: cold-start mark. ARGV: ttl ms. The mark is Redis's clock, so hosts with skewed clocks agree.
_MARK_COLD_START = """
local t = redis.call('TIME')
redis.call('SET', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 'PX', ARGV[1])
return 1
"""

#: KEYS: cold-start mark. Milliseconds since the mark on Redis's clock, or -1 when there is none.
COLD_START_ELAPSED = """
local mark = redis.call('GET', KEYS[1])
if not mark then
  return -1
end
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(mark)
"""

_WITHDRAW = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def bucket_of(shard_id: int, max_concurrency: int) -> int:
    """Discord's identify bucket of a shard."""
    return shard_id % max_concurrency


@dataclass(frozen=True, slots=True)
class IdentifyTicket:
    """A granted identify: the shard may send IDENTIFY now."""

    shard_id: int
    bucket: int
    waited_s: float
    #: ``session_start_limit.remaining`` after this identify, when known.
    remaining: int | None


@dataclass(frozen=True, slots=True)
class IdentifyBudget:
    """The last known ``session_start_limit``, as stored in Redis."""

    total: int
    remaining: int
    max_concurrency: int
    reset_in_s: float


class IdentifyBudgetExhausted(InnkeeperError):
    """The identify budget is at or below the reserve: identifying now could lock the bot out."""

    default_code = ErrorCode.IDENTIFY_BUDGET

    def __init__(self, shard_id: int, remaining: int, reserve: int, reset_in_s: float) -> None:
        super().__init__(
            f"identify budget exhausted: {remaining} identifies left (reserve {reserve}), "
            f"resets in {reset_in_s:.0f} s; shard {shard_id} waits",
            shard_id=shard_id, remaining=remaining, reserve=reserve, reset_in_s=reset_in_s,
        )
        self.shard_id = shard_id
        self.remaining = remaining
        self.reserve = reserve
        self.reset_in_s = reset_in_s


class IdentifyQueue:
    """Cross-process identify rate limiting per bucket, lowest shard first.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    keys:
        Key names (``ipc.keys.Keys``).
    max_concurrency:
        ``session_start_limit.max_concurrency``.
    window_s:
        The identify window (Discord: 5 s; ``INNKEEPER_IDENTIFY_WINDOW``).
    reserve:
        Identifies kept back from the daily budget (``INNKEEPER_IDENTIFY_RESERVE``).
    margin_s:
        Extra hold time past the window, counted from the READY that acknowledged the IDENTIFY
        (``INNKEEPER_IDENTIFY_MARGIN``, default 0). The acknowledgement already bounds the moment
        Discord stamped the IDENTIFY, so no margin is needed for safety; it is kept for operators who
        want slack against a gateway that measures windows differently.
    lease_s:
        How long a waiter stays queued without polling; default ``max(3, 3 × window)``.
    """

    __slots__ = ("redis", "keys", "max_concurrency", "window_s", "reserve", "margin_s", "lease_s",
                 "_acquire", "_withdraw", "_confirm")

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        max_concurrency: int,
        window_s: float,
        reserve: int = 0,
        margin_s: float | None = None,
        lease_s: float | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.redis = redis
        self.keys = keys
        self.max_concurrency = max_concurrency
        self.window_s = window_s
        self.reserve = reserve
        self.margin_s = 0.0 if margin_s is None else margin_s
        self.lease_s = max(3.0, 3 * window_s) if lease_s is None else lease_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._withdraw = redis.register_script(_WITHDRAW)
        self._confirm = redis.register_script(_CONFIRM)

    @property
    def hold_ms(self) -> int:
        """One window plus the margin, in milliseconds: the hold from the READY on."""
        return max(1, round((self.window_s + self.margin_s) * 1000))

    @property
    def pending_ms(self) -> int:
        """The hold from the grant until the READY: :attr:`hold_ms` plus ``max(window, 1 s)``.

        It only runs out when no READY comes (a refused IDENTIFY, a lost connection, a dead
        process), or comes later than ``max(window, 1 s)`` after the grant.
        """
        return self.hold_ms + max(1000, round(self.window_s * 1000))

    def bucket(self, shard_id: int) -> int:
        return bucket_of(shard_id, self.max_concurrency)

    def _keys_for(self, bucket: int) -> list[str]:
        k = self.keys
        return [k.identify_bucket(bucket), k.identify_queue(bucket), k.identify_leases(bucket), k.identify_budget()]

    async def try_acquire(self, shard_id: int) -> tuple[bool, float, int | None]:
        """One attempt. Returns ``(granted, wait_s, remaining)``; ``wait_s`` is how long to sleep.

        Raises
        ------
        IdentifyBudgetExhausted
            When the budget is at or below the reserve (the shard is taken off the queue).
        """
        pending_ms, hold_ms = self.pending_ms, self.hold_ms
        lease_ms = max(1, round(self.lease_s * 1000))
        status, a, b = (int(x) for x in await self._acquire(
            keys=self._keys_for(self.bucket(shard_id)), args=[shard_id, pending_ms, lease_ms, self.reserve]))
        if status == -1:
            raise IdentifyBudgetExhausted(shard_id, a, self.reserve, b / 1000)
        if status == 1:
            return True, 0.0, (a if a >= 0 else None)
        head = b == shard_id
        if a > hold_ms:
            # Pending: the window ends one hold after the READY, which comes a few ms after the
            # grant. Sleep until the earliest such moment, then (the head) poll closely for it.
            wait_ms = max(a - (pending_ms - hold_ms), _POLL_MS if head else max(_POLL_MS, hold_ms / 10))
        elif a > 0:  # acknowledged: the lock expires in exactly ``a`` ms
            wait_ms = a + 1
        else:  # the lock is free but a lower shard is at the head: it takes it any moment
            wait_ms = max(_POLL_MS, self.window_s * 10)
        return False, min(wait_ms / 1000, self.lease_s / 3), None

    async def acquire(self, shard_id: int) -> IdentifyTicket:
        """Wait until ``shard_id`` may IDENTIFY, then return its ticket.

        The caller must send IDENTIFY right away, and call :meth:`confirm` with the ticket when
        the shard's READY arrives. Cancelling the wait takes the shard off the queue.

        Raises
        ------
        IdentifyBudgetExhausted
            When the identify budget is at or below the reserve.
        """
        started = time.monotonic()
        try:
            while True:
                granted, wait, remaining = await self.try_acquire(shard_id)
                if granted:
                    return IdentifyTicket(shard_id, self.bucket(shard_id), time.monotonic() - started, remaining)
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            await self._withdraw_quietly(shard_id)
            raise

    async def confirm(self, ticket: IdentifyTicket) -> None:
        """Start the bucket's window now: call it as soon as the shard's READY arrives.

        Discord stamped the IDENTIFY before it sent READY, so one window from now is past the end
        of Discord's window. Errors are logged, not raised: the pending hold still protects the
        bucket.
        """
        try:
            await self._confirm(keys=[self.keys.identify_bucket(ticket.bucket)], args=[ticket.shard_id, self.hold_ms])
        except Exception as exc:  # noqa: BLE001 - Redis errors of every kind
            _log.warning("could not confirm shard %d's identify window: %s", ticket.shard_id, exc)

    async def _withdraw_quietly(self, shard_id: int) -> None:
        b = self.bucket(shard_id)
        try:
            await asyncio.shield(self._withdraw(keys=[self.keys.identify_queue(b), self.keys.identify_leases(b)],
                                                args=[shard_id]))
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the lease expires anyway
            _log.debug("could not withdraw shard %d from the identify queue", shard_id)


async def store_budget(redis: aioredis.Redis, keys: Keys, session_start_limit: Mapping[str, Any]) -> IdentifyBudget:
    """Store ``session_start_limit`` from ``GET /gateway/bot`` (Discord's numbers replace ours).

    The launcher stores it before it starts the clusters; a cluster stores it when it had to ask
    Discord itself (it runs without a plan, or the budget guard is waiting for a reset). The record
    expires when Discord's budget resets.

    Raises
    ------
    ValueError
        When a field is missing or not a number.
    """
    try:
        total = int(session_start_limit["total"])
        remaining = int(session_start_limit["remaining"])
        reset_after = int(session_start_limit["reset_after"])
        mc = int(session_start_limit.get("max_concurrency", 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed session_start_limit: {exc!r}") from None
    if mc < 1:
        raise ValueError(f"malformed session_start_limit: max_concurrency {mc}")
    script = redis.register_script(_STORE_BUDGET)
    await script(keys=[keys.identify_budget()], args=[total, remaining, max(reset_after, 1), mc])
    return IdentifyBudget(total, remaining, mc, reset_after / 1000)


async def mark_cold_start(redis: aioredis.Redis, keys: Keys, *, ttl_s: float) -> None:
    """Record that every cluster of this plan starts now (the launcher, just before it starts them).

    A cluster whose first identify turn is far off reads the mark (``shard/cold_start.py``) and
    waits before it even imports discord.py, so the clusters identifying first get the CPU.
    """
    script = redis.register_script(_MARK_COLD_START)
    await script(keys=[keys.cold_start()], args=[max(1, round(ttl_s * 1000))])


async def read_budget(redis: aioredis.Redis, keys: Keys) -> IdentifyBudget | None:
    """The stored identify budget, or None when none is stored (or it has reset)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.identify_budget())
        pipe.pttl(keys.identify_budget())
        raw, pttl = await pipe.execute()
    if not raw:
        return None
    data = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    try:
        return IdentifyBudget(int(data["total"]), int(data["remaining"]), int(data.get("max_concurrency", 1)),
                              max(0, int(pttl)) / 1000)
    except (KeyError, ValueError):
        _log.warning("ignoring a malformed identify budget record: %r", data)
        return None
