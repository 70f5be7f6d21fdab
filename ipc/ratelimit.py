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
  next ones. No lock is held across a Redis call: waiters wait on futures, a cluster keeps at
  most one claim per bucket in flight, and rounds run side by side (``max_rounds``).
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
from redis.exceptions import NoScriptError, RedisError

from innkeeper.backoff import Backoff
from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.services import BackgroundTasks

from . import ratelimit_scripts as lua
from .ratelimit_headers import ResponseInfo
from .ratelimit_lease import Claim, LeaseBook, SettleOp, Ticket

if TYPE_CHECKING:
    from redis.asyncio import Redis

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
REQUESTS = Counter("innkeeper_ratelimit_requests_total",
                   "Requests the shared limiter let through, by path: local (a lease or an exempt request, no "
                   "Redis call) or redis (after a claim)", ["path"])
ROUND_TRIPS = Counter("innkeeper_ratelimit_round_trips_total",
                      "Redis round trips of the shared limiter (one pipeline each)")

_REASONS = {lua.WAIT_BUCKET: "bucket", lua.WAIT_GLOBAL: "global", lua.GUARD_DELAY: "guard"}

#: The invalid-request guard's defaults: delays start above :data:`GUARD_SOFT` invalid responses per
#: :data:`GUARD_WINDOW` seconds and reach :data:`GUARD_MAX_DELAY` seconds per request at
#: :data:`GUARD_HARD`, where requests are refused. Discord bans at 10,000 per 10 minutes.
GUARD_SOFT, GUARD_HARD, GUARD_WINDOW, GUARD_MAX_DELAY = 5000, 9000, 600.0, 2.0

#: What a waiter gets back from a round: a ticket, (status, wait ms, estimate), or None (step aside).
_Outcome = Ticket | tuple[int, int, int] | None
#: Waiters of one bucket with the same flags: ((route key, major), (global, bucket, guard exempt), guard served).
_GroupKey = tuple[tuple[str, str], tuple[bool, bool, bool], bool]
_Command = tuple[str, list[str], list[str]]


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
        self._book = LeaseBook(keys, global_rate=global_rate, global_window=global_window + global_margin,
                               lease_ttl=lease_ttl, lease_fraction=lease_fraction, inflight_ttl=inflight_ttl,
                               guard_soft=guard_soft, guard_hard=guard_hard, guard_window=guard_window,
                               guard_max_delay=guard_max_delay, probe_poll=probe_poll,
                               keep=max(60.0, inflight_ttl))
        self.op_timeout = op_timeout
        self.flush_delay = flush_delay
        self.max_rounds = max_rounds
        self._probe_backoff = probe_backoff or Backoff(0.2, 5.0)
        self._shared = True
        self._tasks = BackgroundTasks("ratelimit")
        self._probing = False
        self._pending: dict[_GroupKey, list[asyncio.Future[_Outcome]]] = {}
        self._claiming: set[tuple[str, str]] = set()
        self._rounds: set[asyncio.Task[None]] = set()
        self._kicked = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0
        self._orphans: collections.deque[SettleOp] = collections.deque(maxlen=10_000)
        self._closed = False
        #: Redis round trips made (one pipeline each: claims, reports, settlements), for benchmarks.
        self.redis_calls = 0
        #: Requests asked about (:meth:`acquire` calls), for benchmarks: round trips per request.
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
        self.requests += 1
        if not self._shared or self._closed:
            return None
        loop = asyncio.get_running_loop()
        flags = (global_exempt, bucket_exempt, guard_exempt)
        self._book.note_demand((route_key, major), global_exempt, loop.time())
        guard_served = False
        path = "local"
        while True:
            ticket = self._book.take(route_key, major, global_exempt=global_exempt, bucket_exempt=bucket_exempt,
                                     guard_exempt=guard_exempt, now=loop.time())
            if ticket is not None:
                self._queued()
                REQUESTS.labels(path).inc()
                return ticket
            path = "redis"
            outcome = await self._claim((route_key, major), flags, guard_served)
            if outcome is None or isinstance(outcome, Ticket):
                REQUESTS.labels(path).inc()
                return outcome
            status, wait_ms, estimate = outcome
            if status == lua.REFUSED:
                REFUSED.inc()
                raise RequestRefused(wait_ms / 1000.0, estimate)
            if status == lua.GUARD_DELAY:
                guard_served = True
            if status != lua.TAKEN:
                await self._wait(status, wait_ms, max_wait)

    async def _wait(self, status: int, wait_ms: int, max_wait: float | None) -> None:
        wait = wait_ms / 1000.0
        if max_wait is not None and wait > max_wait and status != lua.GUARD_DELAY:
            raise WaitTooLong(wait)
        reason = _REASONS[status]
        WAITS.labels(reason).inc()
        WAIT_SECONDS.labels(reason).inc(wait)
        await asyncio.sleep(wait)

    async def _claim(self, key: tuple[str, str], flags: tuple[bool, bool, bool], guard_served: bool) -> _Outcome:
        """Join the next round's claim for ``key``; the round answers through the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Outcome] = loop.create_future()
        self._pending.setdefault((key, flags, guard_served), []).append(future)
        self._kick()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and isinstance(ticket := future.result(), Ticket):
                self._book.discard(ticket, loop.time())  # granted, but the request will never leave
                self._queued()
            raise

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
        while self._rounds:
            await asyncio.gather(*self._rounds, return_exceptions=True)
        if self._book.pending and self._shared and not self._closed:
            await self._round([], self._book.take_reports(), self._book.take_settles())

    # --- rounds: one pipeline per round trip ------------------------------------------------------
    def _queued(self) -> None:
        """Something was queued for Redis or a lease changed: schedule what it needs."""
        if not self._shared or self._closed:
            self._orphans.extend(self._book.clear())
            return
        if self._book.urgent:
            self._kick()
        elif self._book.pending and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.flush_delay, self._flush_due)
        self._arm_expiry()

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _flush_due(self) -> None:
        self._flush_timer = None
        self._dispatch(flush=True)

    def _arm_expiry(self) -> None:
        deadline = self._book.next_deadline()
        if deadline is None or (self._expiry_timer is not None and self._expiry_at <= deadline):
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_at = deadline
        self._expiry_timer = asyncio.get_running_loop().call_at(deadline, self._expire_due)

    def _expire_due(self) -> None:
        self._expiry_timer = None
        self._book.expire(asyncio.get_running_loop().time())
        self._queued()

    def _dispatch(self, flush: bool = False) -> None:
        self._kicked = False
        if not self._shared or self._closed:
            self._answer_pending(None)
            return
        while len(self._rounds) < self.max_rounds:
            claims = self._collect()
            if not claims and not (self._book.urgent or (flush and self._book.pending)):
                break
            # what the cluster owes Redis rides with these claims, taken now so no other round sends it
            reports, settles = self._book.take_reports(), self._book.take_settles()
            task = self._tasks.spawn(self._round(claims, reports, settles), name="round")
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
            flush = False
        if self._book.pending and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.flush_delay, self._flush_due)

    def _collect(self) -> list[tuple[Claim, list[asyncio.Future[_Outcome]]]]:
        """One claim per bucket with waiters and no claim in flight; leases taken meanwhile go first."""
        now = asyncio.get_running_loop().time()
        claims = []
        for group, futures in list(self._pending.items()):
            (route_key, major), (global_exempt, bucket_exempt, guard_exempt), guard_served = group
            live = [f for f in futures if not f.done()]
            while live and (ticket := self._book.take(route_key, major, global_exempt=global_exempt,
                                                      bucket_exempt=bucket_exempt, guard_exempt=guard_exempt,
                                                      now=now)) is not None:
                live.pop(0).set_result(ticket)
            if not live or (route_key, major) in self._claiming:
                if live:
                    self._pending[group] = live
                else:
                    del self._pending[group]
                continue
            batch = live if global_exempt else live[:self._book.global_cap]
            if len(batch) < len(live):
                self._pending[group] = live[len(batch):]
            else:
                del self._pending[group]
            claim = self._book.begin_claim(route_key, major, global_exempt=global_exempt,
                                           bucket_exempt=bucket_exempt, guard_exempt=guard_exempt,
                                           guard_served=guard_served, waiters=len(batch), now=now)
            self._claiming.add((route_key, major))
            claims.append((claim, batch))
        return claims

    async def _round(self, claims: list[tuple[Claim, list[asyncio.Future[_Outcome]]]],
                     reports: list[tuple[list[str], SettleOp | None]], settle_ops: list[SettleOp]) -> None:
        book = self._book
        commands: list[_Command] = [("update", book.update_keys, args) for args, _ in reports]
        if settle_ops:
            commands.append(("settle", book.settle_keys, book.settle_args(settle_ops)))
        commands += [("claim", book.claim_keys, claim.args) for claim, _ in claims]
        try:
            results = await self._execute(commands)
        except (RedisError, OSError, TimeoutError) as exc:
            for claim, _ in claims:
                book.abort_claim(claim)
            self._orphans.extend(settle_ops)
            self._orphans.extend(token for _, token in reports if token is not None)
            self._fall_back(exc)
            return
        except BaseException:
            for claim, _ in claims:
                book.abort_claim(claim)
            raise
        else:
            now = asyncio.get_running_loop().time()
            for result in results[:len(reports)]:
                self._note_estimate(int(result))
            for (claim, futures), reply in zip(claims, results[len(commands) - len(claims):], strict=True):
                live = [f for f in futures if not f.done()]
                outcome = book.finish_claim(claim, reply, live=len(live), now=now)
                for future, ticket in zip(live, outcome.tickets, strict=False):
                    future.set_result(ticket)
                for future in live[len(outcome.tickets):]:
                    future.set_result((outcome.status, outcome.wait_ms, outcome.estimate))
            self._note_estimate(book.estimate)
        finally:
            for claim, futures in claims:
                self._claiming.discard(claim.key)
                for future in futures:
                    if not future.done():
                        future.set_result(None)  # closing, or the round failed: step aside
            if self._shared and not self._closed:
                self._queued()
                self._kick()

    async def _execute(self, commands: list[_Command]) -> list[Any]:
        """Run ``commands`` (script name, keys, ARGV) in one pipeline; load the scripts on ``NOSCRIPT``."""
        self.redis_calls += 1
        ROUND_TRIPS.inc()
        async with asyncio.timeout(self.op_timeout):
            results: list[Any] = await self._pipeline(commands)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted or flushed its scripts: load them, run what failed again
                self.redis_calls += 2
                ROUND_TRIPS.inc(2)
                load = self.redis.pipeline(transaction=False)
                for source in (lua.CLAIM, lua.UPDATE, lua.SETTLE):
                    load.script_load(source)
                await load.execute()
                for i, result in zip(missing, await self._pipeline([commands[i] for i in missing]), strict=True):
                    results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _pipeline(self, commands: list[_Command]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for name, keys, args in commands:
            pipe.evalsha(lua.SHAS[name], len(keys), *keys, *args)
        result: list[Any] = await pipe.execute(raise_on_error=False)
        return result

    def _answer_pending(self, outcome: _Outcome) -> None:
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.set_result(outcome)
        self._pending.clear()

    def _note_estimate(self, estimate: int) -> None:
        self._book.estimate = estimate
        INVALID.set(estimate)

    # --- the fallback -----------------------------------------------------------------------------
    def _fall_back(self, exc: BaseException) -> None:
        if not self._shared:
            return
        self._shared = False
        SHARED.set(0)
        FALLBACKS.inc()
        self._orphans.extend(self._book.clear())
        self._answer_pending(None)
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
        """Give back what the cluster held or owed when Redis went away: tokens, slots, answers."""
        orphans = list(self._orphans) + self._book.clear()
        self._orphans.clear()
        if orphans:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._execute([("settle", self._book.settle_keys, self._book.settle_args(orphans))])

    async def start(self) -> None:
        """Nothing to start: the limiter works from its first request (it is installed before login)."""

    async def stop(self) -> None:
        """Give back the leases this cluster holds and stop. The limiter passes every request through afterwards."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            await self.flush()
        self._closed = True
        for timer in (self._flush_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        self._answer_pending(None)
        if self._shared:
            await self._free_orphans()
        await self._tasks.cancel()

    close = stop
