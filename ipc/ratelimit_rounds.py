"""Round trips of the shared REST limiter: one Redis pipeline carries everything a cluster owes or asks.

:class:`Rounds` is the I/O half of :class:`~ipc.ratelimit.SharedRateLimiter`; the decisions are
:class:`~ipc.ratelimit_lease.LeaseBook`'s. A request the book cannot serve from its leases becomes
a *waiter*: a future in a group of its bucket. A *round* takes every group that has no claim in
flight, builds one ``CLAIM`` per group, and sends them in one pipeline after the reports
(``UPDATE``) and settlements (``SETTLE``) the book has queued. Nothing holds a lock across that
await: waiters sleep on their futures, and rounds run side by side (at most ``max_rounds``).

A waiter that must wait (its bucket is spent, the global window is full) is *parked*: it stays
asleep on its future while the cluster keeps it, and joins the round that runs when its wait is
over, with every other waiter due then. So a cluster asks Redis once per moment capacity may
return, not once per waiting request, and a busy event loop does not wake every waiting task to
find it must wait again. While Redis has said the global window is full until some moment
(:attr:`~ipc.ratelimit_lease.LeaseBook.global_open_at`), new requests that need a global slot are
parked until then without asking. A wait longer than the waiter's ``max_wait`` is handed back to
it instead, so that it can raise :class:`~ipc.ratelimit.WaitTooLong`.

Reports go out at once (the next loop iteration, batched with whatever else is queued then);
settlements wait up to ``flush_delay`` for company, unless a claim carries them sooner. Leases
that end are swept by a timer. ``redis_calls`` counts round trips: one per pipeline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from redis.exceptions import NoScriptError, RedisError

from innkeeper.services import BackgroundTasks

from . import ratelimit_scripts as lua
from .ratelimit_lease import Claim, LeaseBook, SettleOp, Ticket

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("Rounds", "Outcome", "WAITS", "WAIT_SECONDS", "ROUND_TRIPS", "REASONS")

_log = logging.getLogger(__name__)

WAITS = Counter("innkeeper_ratelimit_waits_total", "Requests that waited for a token, by reason", ["reason"])
WAIT_SECONDS = Counter("innkeeper_ratelimit_wait_seconds_total", "Seconds spent waiting for tokens", ["reason"])
ROUND_TRIPS = Counter("innkeeper_ratelimit_round_trips_total",
                      "Redis round trips of the shared limiter (one pipeline each)")

REASONS = {lua.WAIT_BUCKET: "bucket", lua.WAIT_GLOBAL: "global", lua.GUARD_DELAY: "guard"}

#: What a waiter gets back: a ticket, (status, wait ms, estimate) for it to act on, or None (step aside).
Outcome = Ticket | tuple[int, int, int] | None
#: Waiters of one bucket with the same flags: ((route key, major), (global, bucket, guard exempt), guard served).
_Group = tuple[tuple[str, str], tuple[bool, bool, bool], bool]
_Command = tuple[str, list[str], list[str]]


class _Waiter:
    __slots__ = ("future", "max_wait")

    def __init__(self, future: asyncio.Future[Outcome], max_wait: float | None) -> None:
        self.future = future
        self.max_wait = max_wait


class Rounds:
    """Carries one cluster's claims, reports and settlements to Redis, one pipeline per round trip.

    Parameters
    ----------
    redis:
        A ``redis.asyncio.Redis`` client.
    book:
        The cluster's :class:`~ipc.ratelimit_lease.LeaseBook`.
    op_timeout:
        Seconds a round trip may take before it counts as a failure.
    flush_delay:
        Seconds settlements may wait for a round trip to share.
    max_rounds:
        Round trips in flight at once.
    on_failure:
        Called with the error and the settlements that did not reach Redis when a round trip
        fails; it should set :attr:`active` to False (the limiter steps aside).
    """

    def __init__(self, redis: Redis, book: LeaseBook, *, op_timeout: float, flush_delay: float, max_rounds: int,
                 on_failure: Callable[[BaseException, list[SettleOp]], None]) -> None:
        self.redis = redis
        self.book = book
        self.op_timeout = op_timeout
        self.flush_delay = flush_delay
        self.max_rounds = max_rounds
        self._on_failure = on_failure
        #: False while Redis is unreachable, and after close: nothing is sent, waiters get None.
        self.active = True
        #: Round trips made (one pipeline each).
        self.redis_calls = 0
        self._pending: dict[_Group, list[_Waiter]] = {}
        self._parked: list[tuple[float, int, _Group, _Waiter]] = []
        self._seq = itertools.count()
        self._claiming: set[tuple[str, str]] = set()
        self._tasks = BackgroundTasks("ratelimit-rounds")
        self._running: set[asyncio.Task[None]] = set()
        self._kicked = False
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}

    # --- waiters ----------------------------------------------------------------------------------
    async def claim(self, key: tuple[str, str], flags: tuple[bool, bool, bool], guard_served: bool,
                    max_wait: float | None) -> Outcome:
        """Wait for a ticket for one request on ``key``, or for an outcome the caller must act on."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), max_wait)
        group = (key, flags, guard_served)
        gate = self.book.global_open_at - loop.time()
        if not flags[0] and gate > 0:
            self._park(group, waiter, lua.WAIT_GLOBAL, gate, loop.time())
        else:
            self._pending.setdefault(group, []).append(waiter)
            self.kick()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and isinstance(ticket := future.result(), Ticket):
                self.book.discard(ticket, loop.time())  # granted, but its request will never leave
                self.queued()
            raise

    def _park(self, group: _Group, waiter: _Waiter, status: int, wait: float, now: float) -> None:
        if waiter.max_wait is not None and wait > waiter.max_wait:
            waiter.future.set_result((status, round(wait * 1000.0), self.book.estimate))
            return
        reason = REASONS[status]
        WAITS.labels(reason).inc()
        WAIT_SECONDS.labels(reason).inc(wait)
        heapq.heappush(self._parked, (now + wait, next(self._seq), group, waiter))
        self._arm("park", self._parked[0][0], self._unpark)

    def _unpark(self) -> None:
        now = asyncio.get_running_loop().time()
        while self._parked and self._parked[0][0] <= now:
            _, _, group, waiter = heapq.heappop(self._parked)
            if not waiter.future.done():
                self._pending.setdefault(group, []).append(waiter)
        if self._parked:
            self._arm("park", self._parked[0][0], self._unpark)
        self.kick()

    def answer_all(self, outcome: Outcome) -> None:
        """Answer every waiter, pending or parked, with ``outcome`` (None: let the request through)."""
        waiters = [w for ws in self._pending.values() for w in ws] + [w for *_, w in self._parked]
        self._pending.clear()
        self._parked.clear()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_result(outcome)

    # --- scheduling -------------------------------------------------------------------------------
    def queued(self) -> None:
        """The book queued something for Redis, or its leases changed: schedule what that needs."""
        if not self.active:
            return
        if self.book.urgent:
            self.kick()
        elif self.book.pending and "flush" not in self._timers:
            loop = asyncio.get_running_loop()
            self._arm("flush", loop.time() + self.flush_delay, lambda: self._dispatch(flush=True))
        deadline = self.book.next_deadline()
        if deadline is not None:
            self._arm("expire", deadline, self._expire)

    def _expire(self) -> None:
        self.book.expire(asyncio.get_running_loop().time())
        self.queued()

    def _arm(self, name: str, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` at ``when`` (loop time), unless the timer ``name`` already runs sooner."""
        current = self._timers.get(name)
        if current is not None:
            if current[0] <= when:
                return
            current[1].cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            del self._timers[name]
            callback()

        self._timers[name] = (when, loop.call_at(when, fire))

    def kick(self) -> None:
        """Run a round at the next loop iteration (calls in the same iteration share it)."""
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self, flush: bool = False) -> None:
        self._kicked = False
        if flush and "flush" in self._timers:
            self._timers.pop("flush")[1].cancel()
        if not self.active:
            self.answer_all(None)
            return
        while len(self._running) < self.max_rounds:
            claims = self._collect()
            if not claims and not (self.book.urgent or (flush and self.book.pending)):
                break
            # what the cluster owes Redis rides with these claims, taken now so no other round sends it
            now = asyncio.get_running_loop().time()
            task = self._tasks.spawn(self._round(claims, self.book.take_reports(now), self.book.take_settles()),
                                     name="round")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            flush = False
        if self.book.pending and "flush" not in self._timers:
            self._arm("flush", asyncio.get_running_loop().time() + self.flush_delay, lambda: self._dispatch(True))

    def _collect(self) -> list[tuple[Claim, _Group, list[_Waiter]]]:
        """One claim per bucket with waiters and no claim in flight; leases taken meanwhile go first."""
        book = self.book
        now = asyncio.get_running_loop().time()
        claims = []
        global_waiters = sum(sum(1 for w in ws if not w.future.done())
                             for (_, (global_exempt, _, _), _), ws in self._pending.items() if not global_exempt)
        for group, waiters in list(self._pending.items()):
            (route_key, major), (global_exempt, bucket_exempt, guard_exempt), guard_served = group
            live = [w for w in waiters if not w.future.done()]
            while live and (ticket := book.take(route_key, major, global_exempt=global_exempt,
                                                bucket_exempt=bucket_exempt, guard_exempt=guard_exempt,
                                                now=now)) is not None:
                live.pop(0).future.set_result(ticket)
            if not live or (route_key, major) in self._claiming:
                if live:
                    self._pending[group] = live
                else:
                    del self._pending[group]
                continue
            batch = live if global_exempt else live[:book.global_cap]
            if len(batch) < len(live):
                self._pending[group] = live[len(batch):]
            else:
                del self._pending[group]
            claim = book.begin_claim(route_key, major, global_exempt=global_exempt, bucket_exempt=bucket_exempt,
                                     guard_exempt=guard_exempt, guard_served=guard_served, waiters=len(batch),
                                     now=now, global_waiters=global_waiters)
            self._claiming.add((route_key, major))
            claims.append((claim, group, batch))
        return claims

    # --- a round trip -----------------------------------------------------------------------------
    async def _round(self, claims: list[tuple[Claim, _Group, list[_Waiter]]],
                     reports: list[tuple[list[str], SettleOp | None]], settles: list[SettleOp]) -> None:
        book = self.book
        commands: list[_Command] = [("update", book.update_keys, args) for args, _ in reports]
        if settles:
            commands.append(("settle", book.settle_keys, book.settle_args(settles)))
        commands += [("claim", book.claim_keys, claim.args) for claim, _, _ in claims]
        answered = False
        try:
            results = await self.execute(commands)
        except (RedisError, OSError, TimeoutError) as exc:
            for claim, _, _ in claims:
                book.abort_claim(claim)
            self._on_failure(exc, settles + [token for _, token in reports if token is not None])
            return
        except BaseException:
            for claim, _, _ in claims:
                book.abort_claim(claim)
            raise
        else:
            now = asyncio.get_running_loop().time()
            for result in results[:len(reports)]:
                book.estimate = int(result)
            for (claim, group, waiters), reply in zip(claims, results[len(commands) - len(claims):], strict=True):
                live = [w for w in waiters if not w.future.done()]
                outcome = book.finish_claim(claim, reply, live=len(live), now=now)
                for waiter, ticket in zip(live, outcome.tickets, strict=False):
                    waiter.future.set_result(ticket)
                for waiter in live[len(outcome.tickets):]:
                    if outcome.status in (lua.WAIT_BUCKET, lua.WAIT_GLOBAL) and outcome.wait_ms > 0:
                        self._park(group, waiter, outcome.status, outcome.wait_ms / 1000.0, now)
                    elif outcome.status == lua.TAKEN:
                        self._pending.setdefault(group, []).append(waiter)  # try again at once
                    else:
                        waiter.future.set_result((outcome.status, outcome.wait_ms, outcome.estimate))
            answered = True
        finally:
            for claim, _, waiters in claims:
                self._claiming.discard(claim.key)
                for waiter in waiters:
                    if not waiter.future.done() and not (answered and self.active):
                        waiter.future.set_result(None)  # closing, or the round trip failed: step aside
            if self.active:
                self.queued()
                self.kick()

    async def execute(self, commands: list[_Command]) -> list[Any]:
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

    async def flush(self) -> None:
        """Wait for the round trips in flight, then send every pending report and settlement now."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self.book.pending and self.active:
            now = asyncio.get_running_loop().time()
            await self._round([], self.book.take_reports(now), self.book.take_settles())

    async def close(self) -> None:
        """Stop: answer every waiter with None, cancel the timers and the round trips in flight."""
        self.active = False
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.answer_all(None)
        await self._tasks.cancel()
