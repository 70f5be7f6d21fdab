"""Discord REST rate limits shared by every cluster through Redis, spent locally from leases.

discord.py limits REST per process: four clusters that hit one channel's bucket overshoot it up
to fourfold, and nothing holds the bot-wide global limit (50/s) before Discord does.
:class:`SharedRateLimiter` closes that gap, and keeps Redis off the path of most requests:

* **The fast path: no Redis call.** A cluster holds *leases*: a few tokens of a bucket's current
  window and a few slots of the global sliding window, taken in one script call and spent
  locally. A request that finds both leaves at once (:meth:`~SharedRateLimiter.acquire`).
* **Otherwise one round trip, shared.** Requests that find no lease wait, grouped by bucket, for
  the next *round*: one Redis pipeline that carries the cluster's pending reports and
  settlements first, then one ``CLAIM`` script per bucket, which grants a token and a slot to each
  waiter (or says how long to wait) and, sized from the cluster's recent demand, a lease for the
  next ones (:mod:`ipc.ratelimit_rounds`). No lock is held across a Redis call: waiters wait on
  futures, a cluster keeps at most one claim per bucket in flight, and rounds run side by side
  (``max_rounds``). A waiter told to wait stays parked on its future and joins the round that
  runs when its wait is over, with every other waiter due then.
* **Responses cost no round trip.** :meth:`~SharedRateLimiter.update` applies the server's
  ``X-RateLimit-*`` headers locally at once. Only what changes shared state goes to Redis, in
  the next round: a new or changed bucket hash, a 429 (it blocks the global limit or the bucket
  according to ``X-RateLimit-Scope``), a 401/403/429 for the invalid-request guard, and limits
  that disagree with the lease. Other answers only settle their token, batched
  (``flush_delay``) or piggybacked on the next claim.

How leases are sized, stamped and reconciled so that the fleet stays within Discord's limits is
written down in :mod:`ipc.ratelimit_lease` (the cluster's side) and :mod:`ipc.ratelimit_scripts`
(Redis's side). ``redis_calls`` counts round trips (one pipeline = one) and ``requests`` counts
requests, so a benchmark can report round trips per request.

The invalid-request guard keeps the bot far from Discord's ban (10,000 invalid responses per 10
minutes per IP): above ``guard_soft`` it delays every request in proportion, above
``guard_hard`` it refuses requests with :class:`RequestRefused` until the estimate falls. While
the estimate is above ``guard_soft`` no lease is granted, so every request asks Redis, as the
guard requires. Interaction callbacks are never delayed or refused (``guard_exempt``): Discord
does not count them against the global limit, and a callback that does not leave within 3 s is an
interaction the user sees fail; they need no Redis call at all. While the limiter steps aside
(below), the per-process guard of ``shard/rest_guard.py`` holds the line with the same thresholds
(:data:`GUARD_SOFT`, :data:`GUARD_HARD`).

When Redis is unreachable the limiter steps aside: ``acquire`` returns at once and discord.py's
own per-process limiting carries on. That is logged once, the gauge
``innkeeper_ratelimit_shared`` drops to 0, the cluster's leases are forgotten (what they held is
given back once Redis answers again), a probe pings Redis with backoff, and shared limiting
resumes (gauge 1, logged once) when Redis answers. No Redis error ever reaches the caller.

``shard/rest_hook.py`` plugs a limiter into a discord.py client; this module knows nothing of
discord.py. Header parsing lives in :mod:`ipc.ratelimit_headers`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from innkeeper.backoff import Backoff
from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.services import BackgroundTasks

from . import ratelimit_scripts as lua
from .ratelimit_headers import ResponseInfo
from .ratelimit_lease import LeaseBook, SettleOp, Ticket
from .ratelimit_rounds import REASONS, WAIT_SECONDS, WAITS, Rounds

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from innkeeper.settings import Settings

    from .keys import Keys

__all__ = ("SharedRateLimiter", "Ticket", "RequestRefused", "WaitTooLong", "ResponseInfo", "GUARD_SOFT",
           "GUARD_HARD", "GUARD_WINDOW", "GUARD_MAX_DELAY")

_log = logging.getLogger(__name__)

SHARED = Gauge("innkeeper_ratelimit_shared",
               "1 while REST limits are shared through Redis; 0 while discord.py limits each process alone")
RESPONSES_429 = Counter("innkeeper_ratelimit_429_total", "429 responses received, by scope", ["scope"])
INVALID = Gauge("innkeeper_ratelimit_invalid_requests",
                "Bot-wide 401/403/429 responses in the guard's sliding window (estimate)")
REFUSED = Counter("innkeeper_ratelimit_refused_total", "Requests refused by the invalid-request guard")
FALLBACKS = Counter("innkeeper_ratelimit_fallbacks_total", "Times shared limiting fell back to local limiting")
REQUESTS = Counter("innkeeper_ratelimit_requests_total",
                   "Requests the shared limiter let through, by path: local (a lease or an exempt request, no "
                   "Redis call) or redis (after a claim)", ["path"])

#: The invalid-request guard's defaults: delays start above :data:`GUARD_SOFT` invalid responses per
#: :data:`GUARD_WINDOW` seconds and reach :data:`GUARD_MAX_DELAY` seconds per request at
#: :data:`GUARD_HARD`, where requests are refused. Discord bans at 10,000 per 10 minutes.
GUARD_SOFT, GUARD_HARD, GUARD_WINDOW, GUARD_MAX_DELAY = 5000, 9000, 600.0, 2.0


class RequestRefused(InnkeeperError):
    """The invalid-request guard refused a request; ``retry_after`` says for how long (seconds).

    Users see ``E2006`` and "The bot is cooling down…" (``shard/pipeline/error_replies.py``).
    """

    default_code = ErrorCode.REST_COOLING_DOWN

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



class SharedRateLimiter:
    """REST buckets and the global limit, shared by every process through Redis, spent from leases.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    keys:
        Key names (:class:`~ipc.keys.Keys`).
    global_rate:
        Requests per ``global_window`` seconds for the whole bot (Discord: 50 per second).
    global_margin:
        Seconds added to the global window to absorb the time between a grant and the request's
        arrival at Discord.
    inflight_ttl:
        Seconds after which a token that was never settled (a request that never reported back)
        stops holding its bucket.
    guard_soft, guard_hard, guard_window:
        Invalid-request guard: delays start above ``guard_soft`` and reach ``guard_max_delay``
        seconds at ``guard_hard``, where requests are refused. Counted over ``guard_window`` seconds.
    op_timeout:
        Seconds a round trip may take before the limiter falls back to local limiting.
    lease_ttl:
        Seconds a lease stays valid. Redis counts a leased global slot as sent at the lease's end,
        so a longer lease holds capacity longer; 0.1–0.25 s suits Discord's 1 s window.
    lease_fraction:
        The largest share of a window (global, or a bucket's) that one lease may take.
    flush_delay:
        Seconds settlements may wait to share a round trip with others (reports never wait).
    max_rounds:
        Round trips this limiter has in flight at once; more wait their turn, so a burst of
        requests cannot exhaust the client's connection pool.
    """

    def __init__(self, redis: Redis, keys: Keys, *, global_rate: int = 50, global_window: float = 1.0,
                 global_margin: float = 0.05, inflight_ttl: float = 10.0, guard_soft: int = GUARD_SOFT,
                 guard_hard: int = GUARD_HARD, guard_window: float = GUARD_WINDOW,
                 guard_max_delay: float = GUARD_MAX_DELAY, probe_poll: float = 0.025, op_timeout: float = 1.0,
                 probe_backoff: Backoff | None = None, lease_ttl: float = 0.2, lease_fraction: float = 0.25,
                 flush_delay: float = 0.02, max_rounds: int = 4) -> None:
        if global_rate < 1 or global_window <= 0 or not 0 < guard_soft < guard_hard or max_rounds < 1:
            raise ValueError("need global_rate >= 1, global_window > 0, 0 < guard_soft < guard_hard and "
                             "max_rounds >= 1")
        self.redis = redis
        self.keys = keys
        self.global_rate = global_rate
        self.global_window = global_window
        self.global_margin = global_margin
        self.op_timeout = op_timeout
        self._book = LeaseBook(keys, global_rate=global_rate, global_window=global_window + global_margin,
                               lease_ttl=lease_ttl, lease_fraction=lease_fraction, inflight_ttl=inflight_ttl,
                               guard_soft=guard_soft, guard_hard=guard_hard, guard_window=guard_window,
                               guard_max_delay=guard_max_delay, probe_poll=probe_poll,
                               keep=max(60.0, inflight_ttl))
        self._rounds = Rounds(redis, self._book, op_timeout=op_timeout, flush_delay=flush_delay,
                              max_rounds=max_rounds, on_failure=self._fall_back)
        self._probe_backoff = probe_backoff or Backoff(0.2, 5.0)
        self._shared = True
        self._tasks = BackgroundTasks("ratelimit")
        self._probing = False
        self._orphans: collections.deque[SettleOp] = collections.deque(maxlen=10_000)
        self._closed = False
        #: Requests let through (:meth:`acquire` calls that returned), for benchmarks: round trips per request.
        self.requests = 0
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

    @property
    def invalid_estimate(self) -> int:
        """The last invalid-request estimate Redis reported."""
        return self._book.estimate

    @property
    def redis_calls(self) -> int:
        """Redis round trips made (one pipeline each: claims, reports, settlements), for benchmarks."""
        return self._rounds.redis_calls

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
        if not self._shared or self._closed:
            self.requests += 1
            return None
        loop = asyncio.get_running_loop()
        book = self._book
        flags = (global_exempt, bucket_exempt, guard_exempt)
        book.note_demand((route_key, major), global_exempt, loop.time())
        guard_served = False
        path = "local"
        while True:
            ticket = book.take(route_key, major, global_exempt=global_exempt, bucket_exempt=bucket_exempt,
                               guard_exempt=guard_exempt, now=loop.time())
            if ticket is not None:
                self._rounds.queued()  # a spent lease settles
                break
            path = "redis"
            outcome = await self._rounds.claim((route_key, major), flags, guard_served, max_wait)
            if outcome is None or isinstance(outcome, Ticket):
                ticket = outcome
                break
            status, wait_ms, estimate = outcome
            if status == lua.REFUSED:
                REFUSED.inc()
                raise RequestRefused(wait_ms / 1000.0, estimate)
            if status == lua.GUARD_DELAY:
                guard_served = True
            if status != lua.TAKEN:
                await self._wait(status, wait_ms, max_wait)
        self.requests += 1
        REQUESTS.labels(path).inc()
        return ticket

    async def _wait(self, status: int, wait_ms: int, max_wait: float | None) -> None:
        wait = wait_ms / 1000.0
        if max_wait is not None and wait > max_wait and status != lua.GUARD_DELAY:
            raise WaitTooLong(wait)
        reason = REASONS[status]
        WAITS.labels(reason).inc()
        WAIT_SECONDS.labels(reason).inc(wait)
        await asyncio.sleep(wait)

    def update(self, ticket: Ticket | None, response: ResponseInfo) -> None:
        """Record a response at once: no round trip; what changes shared state goes in the next one."""
        if ticket is None:
            return
        if response.status == 429:
            RESPONSES_429.labels(response.scope or ("global" if response.is_global else "unknown")).inc()
        self._book.answered(ticket, response, asyncio.get_running_loop().time())
        self._queued()

    def release(self, ticket: Ticket | None) -> None:
        """The request failed without a response: its token goes back to Redis in the next round trip."""
        if ticket is None:
            return
        self._book.failed(ticket)
        self._queued()

    async def flush(self) -> None:
        """Wait for the round trips in flight, then send every pending report and settlement now."""
        await self._rounds.flush()
        INVALID.set(self._book.estimate)

    def _queued(self) -> None:
        if self._shared and not self._closed:
            self._rounds.queued()
        else:
            self._orphans.extend(self._book.clear())  # Redis gets them once it is back

    # --- the fallback -----------------------------------------------------------------------------
    def _fall_back(self, exc: BaseException, lost: list[SettleOp] | None = None) -> None:
        self._orphans.extend(lost or ())
        if not self._shared:
            return
        self._shared = False
        self._rounds.active = False
        SHARED.set(0)
        FALLBACKS.inc()
        self._orphans.extend(self._book.clear())
        self._rounds.answer_all(None)
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
            self._rounds.active = True
            SHARED.set(1)
            _log.warning("Redis is reachable again: REST rate limits are shared across clusters again")
            return

    async def _free_orphans(self) -> None:
        """Give back what the cluster held or owed when Redis went away: tokens, slots, answers."""
        orphans = list(self._orphans) + self._book.clear()
        self._orphans.clear()
        if orphans:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._rounds.execute([("settle", self._book.settle_keys, self._book.settle_args(orphans))])

    async def start(self) -> None:
        """Nothing to start: the limiter works from its first request (it is installed before login)."""

    async def stop(self) -> None:
        """Give back the leases this cluster holds and stop; afterwards every request passes through."""
        if self._closed:
            return
        if self._shared:
            with contextlib.suppress(Exception):
                await self._rounds.flush()
        self._closed = True
        await self._rounds.close()
        if self._shared:
            await self._free_orphans()
        await self._tasks.cancel()

    close = stop
