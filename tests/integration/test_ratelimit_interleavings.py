"""Leases never let the fleet exceed Discord's limits, whatever the interleaving.

Several clusters, each a real :class:`~ipc.ratelimit_lease.LeaseBook` (the logic
:class:`~ipc.ratelimit.SharedRateLimiter` runs), talk to the real Lua scripts in a real Redis, but on
a clock the test owns: the scripts take ``now`` from their first argument, and each cluster's local
clock is the test's plus an offset of its own. Hypothesis chooses everything else: when requests
arrive at which cluster for which channel, when a cluster sends a round trip, how long it takes
each way, when leases are expired, how late each request reaches Discord and how late its answer
comes back (any order). A strict model of Discord counts every arrival: at most ``GLOBAL`` in any
window of one second (a sliding log, the strictest reading of "per second"), and at most
``LIMIT`` per fixed bucket window opened by the first arrival (Discord's buckets). Any excess fails.

The one assumption is the one the limiter states: a request reaches Discord within the global
margin of leaving (here: reply transit + send latency <= ``MARGIN``).
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc import ratelimit_scripts as lua
from ipc.keys import Keys
from ipc.ratelimit_headers import ResponseInfo
from ipc.ratelimit_lease import Claim, LeaseBook, Ticket

pytestmark = pytest.mark.integration

ROUTE = "POST /channels/{channel_id}/messages"
HASH = "msgs"
WINDOW, MARGIN = 1.0, 0.05  # Discord's global window; Redis counts 1.05 s
CLUSTERS = 3
LEASE = 0.4  # seconds; longer than the limiter's default, so that leases are spent often
# each cluster mostly serves the channels of its own guilds (as the gateway splits guilds); all share "x"
CHANNELS = ("own", "own", "own", "x")


@dataclass(frozen=True)
class Limits:
    """Discord's limits in one run: ``rate`` per second bot-wide, ``limit`` per ``reset`` seconds per channel."""

    rate: int
    limit: int
    reset: float


#: The global limit binds (buckets are roomy), or the buckets bind (the global limit is out of reach).
GLOBAL_BOUND, BUCKET_BOUND = Limits(rate=10, limit=100, reset=1.0), Limits(rate=500, limit=3, reset=0.3)


@pytest.fixture(scope="module")
def sync_redis() -> Iterator[redis.Redis]:
    from tests.support import REDIS_TEST_URL, service_missing

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - fails under CI=true, as every service fixture does
        service_missing("Redis", exc)
    for source in (lua.CLAIM, lua.UPDATE, lua.SETTLE):
        client.script_load(source)
    yield client
    client.close()


class Discord:
    """Counts arrivals strictly; answers with Discord's headers."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.arrivals: list[float] = []
        self.windows: dict[str, tuple[float, int]] = {}
        self.sent = 0

    def arrive(self, now: float, channel: str) -> ResponseInfo:
        rate, limit, reset = self.limits.rate, self.limits.limit, self.limits.reset
        recent = [t for t in self.arrivals if t > now - WINDOW]
        assert len(recent) < rate, f"global limit exceeded at {now:.4f}: {sorted(recent)}"
        self.arrivals = [*recent, now]
        opened, count = self.windows.get(channel, (-1.0, 0))
        if now >= opened + reset:
            opened, count = now, 0
        assert count < limit, f"bucket {channel} exceeded in its window opened at {opened:.4f} (now {now:.4f})"
        self.windows[channel] = (opened, count + 1)
        self.sent += 1
        reset_after = opened + reset - now
        return ResponseInfo(200, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(limit - count - 1),
                                  "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": HASH})


@dataclass
class Request:
    channel: str
    latency: float  # seconds from leaving the cluster to reaching Discord
    answer: float  # seconds from reaching Discord to its answer reaching the cluster


@dataclass
class Cluster:
    book: LeaseBook
    offset: float  # this cluster's clock minus the test's
    waiting: dict[str, list[Request]] = field(default_factory=dict)  # channel → requests waiting for a claim
    local: int = 0  # requests sent straight from a lease, no Redis call


class World:
    """A discrete-event run: the test's clock, the clusters, Redis (real) and Discord (a model)."""

    def __init__(self, client: redis.Redis, prefix: str, limits: Limits, offsets: list[float]) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.now = 1_000.0
        self.discord = Discord(limits)
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = itertools.count()
        self.clusters = [Cluster(LeaseBook(self.keys, global_rate=limits.rate, global_window=WINDOW + MARGIN,
                                           lease_ttl=LEASE, lease_fraction=0.5, inflight_ttl=10.0, guard_soft=5000,
                                           guard_hard=9000, guard_window=600.0, guard_max_delay=2.0,
                                           probe_poll=0.025, keep=60.0, demand_tau=0.2), offset)
                         for offset in offsets]
        self.round_trips = 0
        self.requests = 0

    def local(self, c: Cluster) -> float:
        return self.now + c.offset

    def at(self, delay: float, kind: str, *payload: Any) -> None:
        heapq.heappush(self.events, (self.now + delay, next(self.seq), kind, payload))

    # --- what hypothesis can do ---------------------------------------------------------------------
    def arrive(self, c: Cluster, request: Request) -> None:
        self.requests += 1
        c.book.note_demand((ROUTE, request.channel), False, self.local(c))
        ticket = c.book.take(ROUTE, request.channel, global_exempt=False, bucket_exempt=False, guard_exempt=False,
                             now=self.local(c))
        if ticket is None:
            c.waiting.setdefault(request.channel, []).append(request)
        else:
            c.local += 1
            self.at(request.latency, "discord", c, ticket, request)

    def round(self, c: Cluster, to_redis: float, from_redis: float) -> None:
        claims: list[tuple[Claim, list[Request]]] = []
        global_waiters = sum(len(waiting) for waiting in c.waiting.values())
        for channel, waiting in c.waiting.items():
            if waiting:
                batch, waiting[:] = waiting[:c.book.global_cap], waiting[c.book.global_cap:]
                claims.append((c.book.begin_claim(ROUTE, channel, global_exempt=False, bucket_exempt=False,
                                                  guard_exempt=False, guard_served=False, waiters=len(batch),
                                                  now=self.local(c), global_waiters=global_waiters), batch))
        reports, settles = c.book.take_reports(self.local(c)), c.book.take_settles()
        commands = [("update", c.book.update_keys, args) for args, _ in reports]
        if settles:
            commands.append(("settle", c.book.settle_keys, c.book.settle_args(settles)))
        commands += [("claim", c.book.claim_keys, claim.args) for claim, _ in claims]
        if commands:
            self.round_trips += 1
            self.at(to_redis, "redis", c, commands, claims, from_redis)

    def advance(self, dt: float) -> None:
        until = self.now + dt
        while self.events and self.events[0][0] <= until:
            when, _, kind, payload = heapq.heappop(self.events)
            self.now = when
            getattr(self, "_" + kind)(*payload)
        self.now = until

    # --- events -----------------------------------------------------------------------------------------
    def _redis(self, c: Cluster, commands: list[tuple[str, list[str], list[str]]],
               claims: list[tuple[Claim, list[Request]]], from_redis: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name, keys, args in commands:
            pipe.evalsha(lua.SHAS[name], len(keys), *keys, f"{self.now * 1000.0:.3f}", *args[1:])
        replies = pipe.execute()[len(commands) - len(claims):]
        self.at(from_redis, "reply", c, claims, replies)

    def _reply(self, c: Cluster, claims: list[tuple[Claim, list[Request]]], replies: list[list[Any]]) -> None:
        for (claim, batch), reply in zip(claims, replies, strict=True):
            outcome = c.book.finish_claim(claim, reply, live=len(batch), now=self.local(c))
            for ticket, request in zip(outcome.tickets, batch, strict=False):
                self.at(request.latency, "discord", c, ticket, request)
            c.waiting.setdefault(claim.key[1], []).extend(batch[len(outcome.tickets):])

    def _discord(self, c: Cluster, ticket: Ticket, request: Request) -> None:
        self.at(request.answer, "answer", c, ticket, self.discord.arrive(self.now, request.channel))

    def _answer(self, c: Cluster, ticket: Ticket, info: ResponseInfo) -> None:
        c.book.answered(ticket, info, self.local(c))


cluster = st.integers(0, CLUSTERS - 1)
# the reply's transit plus the send latency stay within the margin: the limiter's stated assumption
def ms(low: int, high: int) -> st.SearchStrategy[float]:
    """Seconds, in whole milliseconds from ``low`` to ``high``."""
    return st.integers(low, high).map(lambda n: n / 1000.0)


transit = st.tuples(ms(0, 30), ms(0, 20))  # to Redis, back from Redis
# a burst on one channel, then (as the limiter does at once) a round trip, or (Redis busy) not yet;
# each request reaches Discord within 30 ms and is answered within 50 ms, or late (600 ms)
arrive = st.tuples(st.just("arrive"), cluster, st.sampled_from(CHANNELS),
                   st.lists(st.tuples(ms(0, 30), ms(0, 50) | ms(0, 600)), min_size=1, max_size=4),
                   st.none() | transit)
actions = st.one_of(
    arrive, arrive,
    st.tuples(st.just("round"), cluster, ms(0, 30), ms(0, 20)),
    st.tuples(st.just("advance"), ms(0, 300)),
    st.tuples(st.just("advance"), ms(0, 50)),
    st.tuples(st.just("expire"), cluster),
)


def run(client: redis.Redis, prefix: str, limits: Limits, offsets: list[float], script: list[tuple[Any, ...]]) -> World:
    world = World(client, f"{prefix}:{uuid.uuid4().hex[:8]}", limits, offsets)
    for action, *args in script:
        if action == "arrive":
            channel = str(args[0]) if args[1] == "own" else args[1]
            for latency, answer in args[2]:
                world.arrive(world.clusters[args[0]], Request(channel, latency, answer))
            if args[3] is not None:
                world.round(world.clusters[args[0]], *args[3])
        elif action == "round":
            world.round(world.clusters[args[0]], args[1], args[2])
        elif action == "advance":
            world.advance(args[0])
        else:
            c = world.clusters[args[0]]
            c.book.expire(world.local(c))
    # let everything in flight land (answers, settlements) while the clusters keep claiming
    for _ in range(12):
        for c in world.clusters:
            c.book.expire(world.local(c))
            world.round(c, 0.001, 0.001)
        world.advance(0.1)
    return world


runs = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
offsets = st.lists(st.integers(-50_000, 50_000).map(lambda n: n / 1000.0), min_size=CLUSTERS, max_size=CLUSTERS)
scripts = st.lists(actions, min_size=30, max_size=120)


@runs
@given(offsets=offsets, script=scripts)
def test_no_interleaving_exceeds_the_global_limit(offsets: list[float], script: list[tuple[Any, ...]],
                                                  sync_redis: redis.Redis, redis_prefix: str) -> None:
    run(sync_redis, redis_prefix, GLOBAL_BOUND, offsets, script)


@runs
@given(offsets=offsets, script=scripts)
def test_no_interleaving_exceeds_a_bucket_limit(offsets: list[float], script: list[tuple[Any, ...]],
                                                sync_redis: redis.Redis, redis_prefix: str) -> None:
    run(sync_redis, redis_prefix, BUCKET_BOUND, offsets, script)
