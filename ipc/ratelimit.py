"""Discord REST rate limits shared by every cluster through Redis.

discord.py limits REST per process: four clusters that hit one channel's bucket overshoot it up
to fourfold, and nothing holds the bot-wide global limit (50/s) before Discord does.
:class:`SharedRateLimiter` closes that gap. Per request it makes one Redis round trip before
sending (:meth:`~SharedRateLimiter.acquire`: one atomic Lua script takes a token from the global
sliding window and from the route's bucket, or answers how long to wait) and one after the
response (:meth:`~SharedRateLimiter.update`: the server's ``X-RateLimit-*`` headers overwrite the
shared bucket, the route → bucket-hash map is shared, 429s block the global limit or the bucket
according to ``X-RateLimit-Scope``, and 401/403/429 feed the invalid-request guard).

The invalid-request guard keeps the bot far from Discord's ban (10,000 invalid responses per 10
minutes per IP): above ``guard_soft`` it delays every request in proportion, above
``guard_hard`` it refuses requests with :class:`RequestRefused` until the estimate falls.
Interaction callbacks are never delayed or refused (``guard_exempt``): Discord does not count them
against the global limit, and a callback that does not leave within 3 s is an interaction the user
sees fail. While the limiter steps aside (below), the per-process guard of ``shard/rest_guard.py``
holds the line with the same thresholds (:data:`GUARD_SOFT`, :data:`GUARD_HARD`).

When Redis is unreachable the limiter steps aside: ``acquire`` returns at once and discord.py's
own per-process limiting carries on. That is logged once, the gauge
``innkeeper_ratelimit_shared`` drops to 0, a probe pings Redis with backoff, and shared limiting
resumes (gauge 1, logged once) when Redis answers. No Redis error ever reaches the caller.

``shard/rest_hook.py`` plugs a limiter into a discord.py client; this module knows nothing of
discord.py. Header parsing lives in :mod:`ipc.ratelimit_headers`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from innkeeper.backoff import Backoff
from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.services import BackgroundTasks

from . import ratelimit_scripts as lua
from .ratelimit_headers import ResponseInfo

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from innkeeper.settings import Settings

    from .keys import Keys

__all__ = ("SharedRateLimiter", "Ticket", "RequestRefused", "WaitTooLong", "ResponseInfo", "GUARD_SOFT",
           "GUARD_HARD", "GUARD_WINDOW", "GUARD_MAX_DELAY")

_log = logging.getLogger(__name__)

SHARED = Gauge("innkeeper_ratelimit_shared",
               "1 while REST limits are shared through Redis; 0 while discord.py limits each process alone")
WAITS = Counter("innkeeper_ratelimit_waits_total", "Requests that waited for a token, by reason", ["reason"])
WAIT_SECONDS = Counter("innkeeper_ratelimit_wait_seconds_total", "Seconds spent waiting for tokens", ["reason"])
RESPONSES_429 = Counter("innkeeper_ratelimit_429_total", "429 responses received, by scope", ["scope"])
INVALID = Gauge("innkeeper_ratelimit_invalid_requests",
                "Bot-wide 401/403/429 responses in the guard's sliding window (estimate)")
REFUSED = Counter("innkeeper_ratelimit_refused_total", "Requests refused by the invalid-request guard")
FALLBACKS = Counter("innkeeper_ratelimit_fallbacks_total", "Times shared limiting fell back to local limiting")

_REASONS = {lua.WAIT_BUCKET: "bucket", lua.WAIT_GLOBAL: "global", lua.GUARD_DELAY: "guard"}

#: The invalid-request guard's defaults: delays start above :data:`GUARD_SOFT` invalid responses per
#: :data:`GUARD_WINDOW` seconds and reach :data:`GUARD_MAX_DELAY` seconds per request at
#: :data:`GUARD_HARD`, where requests are refused. Discord bans at 10,000 per 10 minutes.
GUARD_SOFT, GUARD_HARD, GUARD_WINDOW, GUARD_MAX_DELAY = 5000, 9000, 600.0, 2.0


class RequestRefused(InnkeeperError):
    """The invalid-request guard refused a request; ``retry_after`` says for how long (seconds)."""

    default_code = ErrorCode.DISCORD_HTTP

    def __init__(self, retry_after: float, estimate: int) -> None:
        super().__init__(
            f"REST request refused: {estimate} invalid responses (401/403/429) in the last 10 minutes is too close "
            f"to Discord's ban threshold; requests resume in {retry_after:.0f}s",
            user_message="The bot is cooling down after too many failed requests; try again in a few minutes.",
            retry_after=retry_after, estimate=estimate,
        )
        self.retry_after = retry_after
        self.estimate = estimate


class WaitTooLong(InnkeeperError):
    """A token would come later than the caller's ``max_wait``; ``retry_after`` says when (seconds).

    The discord.py plug-in (``shard/rest_hook.py``) turns it into ``discord.RateLimited``, as
    discord.py does itself with ``max_ratelimit_timeout``.
    """

    default_code = ErrorCode.DISCORD_HTTP

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"a rate-limit token would take {retry_after:.2f}s, longer than the caller waits",
                         retry_after=retry_after)
        self.retry_after = retry_after


class Ticket:
    """Proof that :meth:`SharedRateLimiter.acquire` took a token; hand it back to ``update``/``release``."""

    __slots__ = ("route_key", "major", "bucket", "window", "token")

    def __init__(self, route_key: str, major: str, bucket: str, window: int, token: str) -> None:
        self.route_key = route_key
        self.major = major
        self.bucket = bucket
        self.window = window
        self.token = token

    def __repr__(self) -> str:
        return f"<Ticket bucket={self.bucket!r} window={self.window}>"


class _KeyedLocks:
    """One FIFO lock per key, forgotten when nobody holds or waits for it."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> Any:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class SharedRateLimiter:
    """REST buckets and the global limit, shared by every process through Redis.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    keys:
        Key names (:class:`~ipc.keys.Keys`).
    global_rate:
        Requests per ``global_window`` seconds for the whole bot (Discord: 50 per second).
    global_margin:
        Seconds added to the global window to absorb network jitter between processes.
    inflight_ttl:
        Seconds after which a request that never reported back stops holding its bucket's token.
    guard_soft, guard_hard, guard_window:
        Invalid-request guard: delays start above ``guard_soft`` and reach ``guard_max_delay``
        seconds at ``guard_hard``, where requests are refused. Counted over ``guard_window`` seconds.
    op_timeout:
        Seconds a Redis call may take before the limiter falls back to local limiting.
    max_inflight:
        Redis calls this limiter makes at once; more wait their turn, so a burst of requests
        cannot exhaust the client's connection pool.
    """

    def __init__(self, redis: Redis, keys: Keys, *, global_rate: int = 50, global_window: float = 1.0,
                 global_margin: float = 0.05, inflight_ttl: float = 10.0, guard_soft: int = GUARD_SOFT,
                 guard_hard: int = GUARD_HARD, guard_window: float = GUARD_WINDOW,
                 guard_max_delay: float = GUARD_MAX_DELAY,
                 probe_poll: float = 0.025, op_timeout: float = 1.0, probe_backoff: Backoff | None = None,
                 max_inflight: int = 16) -> None:
        if global_rate < 1 or global_window <= 0 or not 0 < guard_soft < guard_hard:
            raise ValueError("need global_rate >= 1, global_window > 0 and 0 < guard_soft < guard_hard")
        self.redis = redis
        self.keys = keys
        self.global_rate = global_rate
        self.global_window = global_window
        self.global_margin = global_margin
        self._acquire: AsyncScript = redis.register_script(lua.ACQUIRE)
        self._update: AsyncScript = redis.register_script(lua.UPDATE)
        self._acquire_keys = [keys.rl_route_map(), keys.rl_global(), keys.rl_global_block(), keys.rl_invalid()]
        self._update_keys = [keys.rl_route_map(), keys.rl_global_block(), keys.rl_invalid()]
        self._prefix = keys.rl_bucket_prefix()
        ms = 1000.0
        self._static = (str(global_rate), _fmt((global_window + global_margin) * ms), _fmt(inflight_ttl * ms),
                        str(guard_soft), str(guard_hard), _fmt(guard_window * ms), _fmt(guard_max_delay * ms))
        self._guard_window_ms = _fmt(guard_window * ms)
        self._probe_poll_ms = _fmt(probe_poll * ms)
        self._keep_ms = _fmt(max(60.0, inflight_ttl) * ms)
        self.op_timeout = op_timeout
        self._probe_backoff = probe_backoff or Backoff(0.2, 5.0)
        self._shared = True
        self._tasks = BackgroundTasks("ratelimit")
        self._probing = False
        self._bucket_locks = _KeyedLocks()
        self._global_turn: asyncio.Lock | None = None
        self._orphans: collections.deque[Ticket] = collections.deque(maxlen=10_000)
        self._inflight = asyncio.Semaphore(max_inflight)
        self._closed = False
        #: The last invalid-request estimate Redis reported.
        self.invalid_estimate = 0
        #: Redis calls made (acquire attempts, updates, releases), for benchmarks and debugging.
        self.redis_calls = 0
        SHARED.set(1)

    @classmethod
    def from_settings(cls, redis: Redis, keys: Keys, settings: Settings, **options: Any) -> SharedRateLimiter:
        """A limiter with ``global_rate`` and the guard's thresholds from the settings."""
        options.setdefault("guard_soft", settings.guard_soft)
        options.setdefault("guard_hard", settings.guard_hard)
        return cls(redis, keys, global_rate=settings.global_rate, **options)

    @property
    def shared(self) -> bool:
        """True while limits are shared through Redis; False while falling back to local limiting."""
        return self._shared

    # --- the request path -------------------------------------------------------------------------
    async def acquire(self, route_key: str, major: str = "", *, global_exempt: bool = False,
                      bucket_exempt: bool = False, guard_exempt: bool = False,
                      max_wait: float | None = None) -> Ticket | None:
        """Wait until a request on ``route_key`` (+ ``major`` parameters) may be sent.

        Parameters
        ----------
        route_key:
            discord.py's ``Route.key`` (``"POST /channels/{channel_id}/messages"``).
        major:
            ``Route.major_parameters`` (``"1234"``).
        global_exempt:
            True for interaction callbacks, which Discord does not count toward the global limit.
        bucket_exempt:
            True for requests that can only happen once per bucket (interaction callbacks).
        guard_exempt:
            True for requests the invalid-request guard must never delay or refuse (interaction
            callbacks); their responses still count.
        max_wait:
            When a wait would exceed this many seconds, raise :class:`WaitTooLong` instead.

        Returns
        -------
        Ticket | None
            A ticket for :meth:`update`, or None while falling back to local limiting.

        Raises
        ------
        RequestRefused
            The invalid-request guard is refusing requests.
        WaitTooLong
            The wait would exceed ``max_wait``.
        """
        guard_served = False
        token = uuid.uuid4().hex
        async with self._bucket_locks.hold(f"{route_key}\x00{major}"):
            while True:
                if global_exempt:
                    reply = await self._acquire_once(route_key, major, token, True, bucket_exempt, guard_served,
                                                     guard_exempt)
                else:
                    # One task per process at a time waits on the global limit; the others queue
                    # here, so a saturated global window costs one Redis call per process per slot.
                    async with self._global_lock():
                        reply = await self._acquire_once(route_key, major, token, False, bucket_exempt,
                                                         guard_served, guard_exempt)
                        while reply is not None and reply[0] == lua.WAIT_GLOBAL:
                            await self._wait(reply, max_wait)
                            reply = await self._acquire_once(route_key, major, token, False, bucket_exempt,
                                                             guard_served, guard_exempt)
                if reply is None:
                    return None
                status, wait_ms, bucket, window, estimate = reply
                if status == lua.TAKEN:
                    return Ticket(route_key, major, bucket, window, token)
                if status == lua.REFUSED:
                    REFUSED.inc()
                    raise RequestRefused(wait_ms / 1000.0, estimate)
                if status == lua.GUARD_DELAY:
                    guard_served = True
                await self._wait(reply, max_wait)

    async def _wait(self, reply: tuple[int, int, str, int, int], max_wait: float | None) -> None:
        status, wait_ms = reply[0], reply[1]
        wait = wait_ms / 1000.0
        if max_wait is not None and wait > max_wait and status != lua.GUARD_DELAY:
            raise WaitTooLong(wait)
        reason = _REASONS[status]
        WAITS.labels(reason).inc()
        WAIT_SECONDS.labels(reason).inc(wait)
        await asyncio.sleep(wait)

    async def _acquire_once(self, route_key: str, major: str, token: str, global_exempt: bool, bucket_exempt: bool,
                            guard_served: bool, guard_exempt: bool) -> tuple[int, int, str, int, int] | None:
        g_rate, g_window, inflight, soft, hard, guard_w, guard_delay = self._static
        args = [route_key, major, self._prefix, token, "1" if global_exempt else "0", g_rate, g_window, inflight,
                soft, hard, guard_w, guard_delay, "1" if guard_served else "0", self._probe_poll_ms, self._keep_ms,
                "1" if bucket_exempt else "0", "1" if guard_exempt else "0"]
        reply = await self._run(self._acquire, self._acquire_keys, args)
        if reply is None:
            return None
        status, wait_ms, bucket, window, estimate = reply
        bucket_s = bucket.decode() if isinstance(bucket, bytes) else str(bucket)
        self._note_estimate(int(estimate))
        return int(status), int(wait_ms), bucket_s, int(window), int(estimate)

    async def update(self, ticket: Ticket | None, response: ResponseInfo) -> None:
        """Record a response: its limits, its bucket hash, a 429's block, an invalid status."""
        if ticket is None:
            return
        if response.status == 429:
            RESPONSES_429.labels(response.scope or ("global" if response.is_global else "unknown")).inc()
        has = response.has_limits
        args = [ticket.route_key, ticket.major, self._prefix, ticket.bucket, str(ticket.window), ticket.token,
                str(response.status), str(response.limit) if has else "", str(response.remaining) if has else "0",
                _fmt((response.reset_after or 0.0) * 1000.0), response.bucket, response.scope,
                _fmt(response.retry_after * 1000.0), "1" if response.is_global else "0", self._guard_window_ms,
                self._keep_ms, "1" if response.counts_as_invalid else "0"]
        estimate = await self._run(self._update, self._update_keys, args)
        if estimate is not None:
            self._note_estimate(int(estimate))
        elif ticket.bucket:
            # Redis failed mid-request: free the slot once it is back, or the bucket stalls
            # until the in-flight entry expires
            self._orphans.append(ticket)

    async def release(self, ticket: Ticket | None) -> None:
        """The request failed without a response: give its in-flight slot back."""
        if ticket is None or not ticket.bucket:
            return
        done = await self._run_plain(self.redis.zrem, self.keys.rl_bucket_inflight(ticket.bucket), ticket.token)
        if done is None:
            self._orphans.append(ticket)

    def _global_lock(self) -> asyncio.Lock:
        if self._global_turn is None:
            self._global_turn = asyncio.Lock()
        return self._global_turn

    def _note_estimate(self, estimate: int) -> None:
        self.invalid_estimate = estimate
        INVALID.set(estimate)

    # --- Redis calls and the fallback -------------------------------------------------------------
    async def _run(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        return await self._run_plain(script, keys=keys, args=args)

    async def _run_plain(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._shared or self._closed:
            return None
        self.redis_calls += 1
        try:
            async with self._inflight, asyncio.timeout(self.op_timeout):
                return await func(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            self._fall_back(exc)
            return None

    def _fall_back(self, exc: BaseException) -> None:
        if not self._shared:
            return
        self._shared = False
        SHARED.set(0)
        FALLBACKS.inc()
        _log.warning("Redis is unreachable (%s: %s): REST rate limits fall back to discord.py's per-process "
                     "limiting until it is back", type(exc).__name__, exc)
        if not self._probing:
            self._probing = True
            self._tasks.spawn(self._probe(), name="redis-probe")

    async def _probe(self) -> None:
        try:
            await self._probe_until_back()
        finally:
            self._probing = False

    async def _probe_until_back(self) -> None:
        self._probe_backoff.reset()
        while not self._closed:
            await asyncio.sleep(self._probe_backoff.next())
            try:
                async with asyncio.timeout(self.op_timeout):
                    await self.redis.ping()
                    # idle pooled connections may still point at a dead server: drop them
                    await self.redis.connection_pool.disconnect(inuse_connections=False)
            except (RedisError, OSError, TimeoutError):
                continue
            await self._free_orphans()
            self._shared = True
            SHARED.set(1)
            _log.warning("Redis is reachable again: REST rate limits are shared across clusters again")
            return

    async def _free_orphans(self) -> None:
        orphans = list(self._orphans)
        self._orphans.clear()
        if not orphans:
            return
        pipe = self.redis.pipeline(transaction=False)
        for ticket in orphans:
            pipe.zrem(self.keys.rl_bucket_inflight(ticket.bucket), ticket.token)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.op_timeout):
                await pipe.execute()

    async def start(self) -> None:
        """Nothing to start: the limiter works from its first request (it is installed before login)."""

    async def stop(self) -> None:
        """Stop the Redis probe. The limiter passes every request through afterwards."""
        self._closed = True
        await self._tasks.cancel()

    close = stop


def _fmt(value: float) -> str:
    return f"{value:.3f}"
