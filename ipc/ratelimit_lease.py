"""One cluster's side of the shared REST limits: the leases it holds, and what it owes Redis.

:class:`LeaseBook` does no I/O and reads no clock: :class:`~ipc.ratelimit.SharedRateLimiter` feeds it
the time and carries its scripts' arguments to Redis, and the interleaving test
(``tests/integration/test_ratelimit_interleavings.py``) drives several books against the real
scripts with a clock of its own. Everything that decides what a cluster may send lives here.

A request leaves at once, with no Redis call, when the book holds a token of its bucket and a slot
of the global window (:meth:`LeaseBook.take`). Otherwise its waiters are grouped by bucket into a
:class:`Claim`, which asks the ``CLAIM`` script (:mod:`ipc.ratelimit_scripts`) for one token and
slot per waiter, plus a *lease* sized from this cluster's recent demand (a decaying rate times
the lease's validity): extra bucket tokens for that bucket, extra global slots for any bucket.

The rules a lease obeys, and why the fleet stays within Discord's limits:

* **Global slots.** A leased slot is valid ``lease_ttl`` seconds from the moment its claim was sent
  (no later than Redis granted it), and Redis stamps it at grant + ``lease_ttl``: its latest possible
  use, so the sliding log counts it in every window it could be sent in. Used slots are restamped
  to the settlement's time (no earlier than their use) and unused ones removed once the lease is
  spent or expired; both only shrink what others wait for. Slots handed at once to waiting
  requests are stamped at the grant, as before leases: like every grant, they rely on the global
  margin covering the time from grant to arrival at Discord.
* **Bucket tokens.** A lease never exceeds the bucket's remaining tokens (Redis takes them from
  ``remaining`` when it grants them), ends at the bucket's reset as this cluster can bound it from
  below (claim sent + time to reset), and each token stays in the bucket's in-flight set until it is
  settled: answered, failed, or returned unused. A window that opens meanwhile starts with
  ``limit - in flight``, so a token granted in one window and sent late is never counted twice.
* **Responses** are applied here at once. Only what changes shared state is reported to Redis
  (``UPDATE``, sent before anything else in the next round trip): a 429, a 401/403 for the guard,
  a bucket whose hash or limit was unknown or changed, the first answer of a window Redis opened
  itself, a reset that may be later than the one the lease was granted under (judged against a
  lower bound of Redis's reset: claim sent + time to reset), or fewer tokens left at Discord than
  the lease still holds (leftover tokens are then dropped). Any other answer only settles its
  token, batched with others (``SETTLE``).
* **Fairness.** The script caps a lease at ``lease_fraction`` of the window (of the global limit, of
  the bucket's limit), grants none while the invalid-request guard is above its soft threshold or
  while any of the claim's waiters is left waiting, and an idle cluster (no recent demand) asks
  for none.
* **Waiting.** When Redis says the global window is full, :attr:`LeaseBook.global_open_at` holds
  the cluster's requests that need a slot until ``wake_batch`` slots are free, so they come back
  in one round trip.
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING

from . import ratelimit_scripts as lua

if TYPE_CHECKING:
    from .keys import Keys
    from .ratelimit_headers import ResponseInfo

__all__ = ("LeaseBook", "Ticket", "Claim", "ClaimResult", "SettleOp")

#: One ``SETTLE`` operation: kind, bucket id, lease id, first index, count, window number.
SettleOp = tuple[str, str, str, int, int, int]
#: A bucket, as the limiter keys it: (route key, major parameters).
Key = tuple[str, str]

_RESET_SLACK = 0.001  # seconds: Discord rounds Reset-After to whole ms


class _Rate:
    """Requests per second, decaying exponentially with time constant ``tau`` seconds."""

    __slots__ = ("value", "at", "tau")

    def __init__(self, tau: float) -> None:
        self.value = 0.0
        self.at = 0.0
        self.tau = tau

    def hit(self, now: float) -> None:
        self.value = self.current(now) + 1.0 / self.tau
        self.at = now

    def current(self, now: float) -> float:
        return self.value * math.exp(-max(now - self.at, 0.0) / self.tau)


class _BucketLease:
    """Tokens of one bucket window granted by one claim; ``free`` are the indices not handed out."""

    __slots__ = ("lid", "key", "bid", "win", "limit", "free", "end", "reset_lo", "confirmed", "first_reported")

    def __init__(self, lid: str, key: Key, bid: str, win: int, limit: int, end: float, reset_lo: float,
                 confirmed: bool) -> None:
        self.lid, self.key, self.bid, self.win, self.limit = lid, key, bid, win, limit
        self.free: list[int] = []
        self.end = end  # local time by which every token must have left (at or before the reset)
        # local time no later than the reset Redis granted under (claim sent + time to reset): a
        # server reset past it may be past Redis's, which must then hear of it
        self.reset_lo = reset_lo
        self.confirmed = confirmed
        self.first_reported = False


class _GlobalLease:
    """Global slots ``first … first + count - 1`` of one claim: ``used`` went out, ``reserved`` wait on a claim."""

    __slots__ = ("lid", "first", "count", "used", "reserved", "end")

    def __init__(self, lid: str, first: int, count: int, end: float) -> None:
        self.lid, self.first, self.count, self.end = lid, first, count, end
        self.used = 0
        self.reserved = 0

    @property
    def available(self) -> int:
        return self.count - self.used - self.reserved


class Ticket:
    """Proof that a request may be sent; hand it back to ``update``/``release`` of the limiter."""

    __slots__ = ("route_key", "major", "bucket", "window", "token", "_lease", "_index", "_glease")

    def __init__(self, route_key: str, major: str, bucket: str, window: int, token: str,
                 lease: _BucketLease | None = None, index: int = -1, glease: _GlobalLease | None = None) -> None:
        self.route_key = route_key
        self.major = major
        self.bucket = bucket
        self.window = window
        self.token = token
        self._lease = lease
        self._index = index
        self._glease = glease

    def __repr__(self) -> str:
        return f"<Ticket bucket={self.bucket!r} window={self.window}>"


class Claim:
    """One group of waiters on one bucket, on its way to the ``CLAIM`` script; ``args`` are its ARGV."""

    __slots__ = ("lid", "key", "flags", "waiters", "bucket_reserved", "global_reserved", "sent_at", "args",
                 "leases_global")

    def __init__(self, lid: str, key: Key, flags: tuple[bool, bool, bool], waiters: int, sent_at: float) -> None:
        self.lid, self.key, self.flags, self.waiters, self.sent_at = lid, key, flags, waiters, sent_at
        self.bucket_reserved: list[tuple[_BucketLease, int]] = []
        self.global_reserved: list[_GlobalLease] = []
        self.args: list[str] = []
        self.leases_global = False


class ClaimResult:
    """What a claim brought: tickets for the first waiters, and for the others a status and a wait."""

    __slots__ = ("tickets", "status", "wait_ms", "estimate")

    def __init__(self, tickets: list[Ticket], status: int, wait_ms: int, estimate: int) -> None:
        self.tickets, self.status, self.wait_ms, self.estimate = tickets, status, wait_ms, estimate


class LeaseBook:
    """The leases one cluster holds, and the reports and settlements it owes Redis.

    Parameters
    ----------
    keys:
        Key names (:class:`~ipc.keys.Keys`).
    global_rate, global_window:
        The global limit: ``global_rate`` requests per ``global_window`` seconds (margin included).
    lease_ttl:
        Seconds a lease stays valid (global slots; bucket tokens end sooner at the bucket's reset).
    lease_fraction:
        The largest share of a window's capacity (global or bucket) one lease may take.
    inflight_ttl:
        Seconds after its lease ends that a token nobody settles stops counting as in flight.
    guard_soft, guard_hard, guard_window, guard_max_delay:
        The invalid-request guard's thresholds (see :class:`~ipc.ratelimit.SharedRateLimiter`).
    probe_poll:
        Seconds between tries while another request probes a bucket of unknown limit.
    keep:
        Seconds a bucket's state outlives its window in Redis.
    demand_tau:
        Seconds over which the demand estimate that sizes leases forgets (a decaying rate).
    """

    def __init__(self, keys: Keys, *, global_rate: int, global_window: float, lease_ttl: float,
                 lease_fraction: float, inflight_ttl: float, guard_soft: int, guard_hard: int,
                 guard_window: float, guard_max_delay: float, probe_poll: float, keep: float,
                 demand_tau: float = 1.0) -> None:
        if not 0 < lease_fraction <= 1 or lease_ttl <= 0:
            raise ValueError("need 0 < lease_fraction <= 1 and lease_ttl > 0")
        self.prefix = keys.rl_bucket_prefix()
        self.claim_keys = [keys.rl_route_map(), keys.rl_global(), keys.rl_global_block(), keys.rl_invalid()]
        self.update_keys = [keys.rl_route_map(), keys.rl_global_block(), keys.rl_invalid()]
        self.settle_keys = [keys.rl_global()]
        self.global_rate = global_rate
        self.lease_ttl = lease_ttl
        self.global_cap = max(1, math.floor(global_rate * lease_fraction))
        # While the global window is full, a cluster's waiters sleep until this many slots are free
        # and come back in one round trip. Slots freed meanwhile stay idle: about (batch - 1) / 2
        # slot intervals each, so (batch - 1) / (2 * rate) of the throughput; this batch keeps
        # that near 1 % (2 at 50/s) while a cluster asks Redis about half as often as once per slot.
        self.wake_batch = min(1 + global_rate // 40, self.global_cap)
        self.guard_soft = guard_soft
        self._static = (str(global_rate), _ms(global_window), _ms(lease_ttl), _ms(inflight_ttl), str(guard_soft),
                        str(guard_hard), _ms(guard_window), _ms(guard_max_delay), _ms(probe_poll), _ms(keep),
                        repr(lease_fraction))
        self._guard_window_ms = _ms(guard_window)
        self._keep_ms = _ms(keep)
        self._pool: dict[Key, list[_BucketLease]] = {}
        self._gpool: list[_GlobalLease] = []
        self._global_blocked_until = 0.0
        #: Local time before which Redis said the global window has no slot for this cluster's waiters:
        #: requests that need one wait for it here rather than each asking Redis.
        self.global_open_at = 0.0
        self._global_claiming = False
        self._demand: dict[Key, _Rate] = {}
        self._demand_tau = demand_tau
        self._gdemand = _Rate(demand_tau)
        self._reports: list[tuple[list[str], SettleOp | None, float]] = []
        self._settles: list[SettleOp] = []
        #: True when something queued should reach Redis without waiting for a batch.
        self.urgent = False
        #: The last invalid-request estimate Redis reported.
        self.estimate = 0

    # --- the fast path --------------------------------------------------------------------------
    def note_demand(self, key: Key, global_exempt: bool, now: float) -> None:
        """Count one request toward the demand that sizes this cluster's next leases."""
        rate = self._demand.get(key)
        if rate is None:
            if len(self._demand) >= 4096:
                self._demand = {k: r for k, r in self._demand.items() if r.current(now) >= 0.01}
            rate = self._demand[key] = _Rate(self._demand_tau)
        rate.hit(now)
        if not global_exempt:
            self._gdemand.hit(now)

    def take(self, route_key: str, major: str, *, global_exempt: bool, bucket_exempt: bool, guard_exempt: bool,
             now: float) -> Ticket | None:
        """A ticket from what this cluster holds, or None when Redis must be asked."""
        if not guard_exempt and self.estimate > self.guard_soft:
            return None  # the guard may delay or refuse: every request asks Redis
        lease: _BucketLease | None = None
        if not bucket_exempt:
            lease = self._pooled((route_key, major), now)
            if lease is None:
                return None
        glease: _GlobalLease | None = None
        if not global_exempt:
            glease = self._gpooled(now)
            if glease is None:
                return None
            glease.used += 1
            self._maybe_settle_global(glease, now)
        if lease is None:
            return Ticket(route_key, major, "", 0, "", glease=glease)
        index = lease.free.pop()
        return Ticket(route_key, major, lease.bid, lease.win, f"{lease.lid}:b{index}", lease, index, glease)

    def _pooled(self, key: Key, now: float) -> _BucketLease | None:
        for lease in self._pool.get(key, ()):
            if lease.free and now < lease.end:
                return lease
        return None

    def _gpooled(self, now: float) -> _GlobalLease | None:
        if now < self._global_blocked_until:
            return None
        for lease in self._gpool:
            if lease.available > 0 and now < lease.end:
                return lease
        return None

    # --- claims -----------------------------------------------------------------------------------
    def begin_claim(self, route_key: str, major: str, *, global_exempt: bool, bucket_exempt: bool,
                    guard_exempt: bool, guard_served: bool, waiters: int, now: float,
                    global_waiters: int = 0) -> Claim:
        """Reserve what this cluster holds for ``waiters`` requests and ask Redis for the rest.

        ``global_waiters`` counts this cluster's requests waiting for global slots on every bucket:
        when the window is full, they sleep until that many slots are free (at most ``wake_batch``).
        """
        key = (route_key, major)
        lid = uuid.uuid4().hex[:16]
        claim = Claim(lid, key, (global_exempt, bucket_exempt, guard_exempt), waiters, now)
        leasing = self.estimate <= self.guard_soft
        if not bucket_exempt and leasing:
            while len(claim.bucket_reserved) < waiters and (lease := self._pooled(key, now)) is not None:
                claim.bucket_reserved.append((lease, lease.free.pop()))
        if not global_exempt and leasing:
            while len(claim.global_reserved) < waiters and (glease := self._gpooled(now)) is not None:
                glease.reserved += 1
                claim.global_reserved.append(glease)
        want_b = want_g = 0
        if not bucket_exempt and leasing:
            want_b = math.floor(self._demand[key].current(now) * self.lease_ttl) if key in self._demand else 0
        if not global_exempt and leasing and not self._global_claiming:
            held = sum(g.available for g in self._gpool if now < g.end)
            want_g = max(math.floor(self._gdemand.current(now) * self.lease_ttl) - held, 0)
            if want_g > 0:
                claim.leases_global = self._global_claiming = True
        (g_rate, g_window, ttl, inflight, soft, hard, guard_w, guard_delay, poll, keep, frac) = self._static
        claim.args = ["", route_key, major, self.prefix, lid, _flag(global_exempt), _flag(bucket_exempt),
                      _flag(guard_exempt), _flag(guard_served), str(waiters), str(len(claim.bucket_reserved)),
                      str(len(claim.global_reserved)), str(want_b), str(want_g), g_rate, g_window, ttl, inflight,
                      soft, hard, guard_w, guard_delay, poll, keep, frac,
                      str(min(max(global_waiters, waiters, 1), self.wake_batch))]
        return claim

    def finish_claim(self, claim: Claim, reply: list[object], *, live: int, now: float) -> ClaimResult:
        """Apply the script's ``reply``; tickets go to the first ``live`` waiters still there."""
        status, wait_ms, estimate, served, need_b, need_g, lease_b, lease_g, reset_in, limit, win = (
            _int(reply[i]) for i in (0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 3))
        bid = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
        confirmed = _int(reply[12]) == 1
        self.estimate = estimate
        if claim.leases_global:
            self._global_claiming = False
        global_exempt, bucket_exempt, _ = claim.flags
        lid, t0 = claim.lid, claim.sent_at
        lease: _BucketLease | None = None
        if need_b + lease_b > 0:
            end = t0 + self.lease_ttl if limit < 0 else min(t0 + reset_in / 1000.0, t0 + self.lease_ttl)
            lease = _BucketLease(lid, claim.key, bid, win, limit, end, t0 + reset_in / 1000.0,
                                 confirmed and limit >= 0)
        gnow = _GlobalLease(lid, 0, need_g, now) if need_g > 0 else None
        # pair a bucket token with a global slot for each waiter still there, reserved ones first;
        # a reserved token whose lease ended meanwhile, or any slot while a global 429 blocks, is void
        buckets: list[tuple[_BucketLease, int]] = []
        for le, i in claim.bucket_reserved:
            if now < le.end:
                buckets.append((le, i))
            else:
                self._settle(("u", le.bid, le.lid, i, 1, le.win))
        if lease is not None:
            buckets += [(lease, i) for i in range(need_b)]
        blocked = now < self._global_blocked_until
        slots: list[_GlobalLease] = []
        for g in claim.global_reserved:
            if now < g.end and not blocked:
                slots.append(g)
            else:
                g.reserved -= 1
        if gnow is not None and not blocked:
            slots += [gnow] * need_g
        pairs = min(served, live, live if bucket_exempt else len(buckets), live if global_exempt else len(slots))
        tickets = []
        for k in range(pairs):
            glease = None
            if not global_exempt:
                glease = slots[k]
                glease.used += 1
                if glease is not gnow:
                    glease.reserved -= 1
            if bucket_exempt:
                tickets.append(Ticket(claim.key[0], claim.key[1], "", 0, "", glease=glease))
                continue
            le, i = buckets[k]
            tickets.append(Ticket(claim.key[0], claim.key[1], le.bid, le.win, f"{le.lid}:b{i}", le, i, glease))
        # what was not handed out goes back to the pool, or to Redis when its lease is over
        for g in slots[pairs:]:
            if g is not gnow:
                g.reserved -= 1
        for g in claim.global_reserved:
            self._maybe_settle_global(g, now)
        for le, i in buckets[pairs:]:
            if now < le.end:
                le.free.append(i)
                self._pool_bucket(le)
            else:
                self._settle(("u", le.bid, le.lid, i, 1, le.win))
        if lease is not None and lease_b > 0:
            if now < lease.end:
                lease.free.extend(range(need_b, need_b + lease_b))
                self._pool_bucket(lease)
            else:
                self._settle(("u", lease.bid, lid, need_b, lease_b, lease.win))
        if gnow is not None and gnow.used < need_g:
            self._settle(("d", "", lid, gnow.used, need_g - gnow.used, 0))  # stamped now, nobody to use them
        if lease_g > 0:
            extra = _GlobalLease(lid, need_g, lease_g, t0 + self.lease_ttl)
            self._gpool.append(extra)
            if blocked:
                extra.end = now
            self._maybe_settle_global(extra, now)
        if pairs < live and status == lua.TAKEN:
            wait_ms = 0  # reserved tokens ran out meanwhile: the rest try again at once
        if status == lua.WAIT_GLOBAL:
            self.global_open_at = max(self.global_open_at, now + wait_ms / 1000.0)
        return ClaimResult(tickets, status, wait_ms, estimate)

    def abort_claim(self, claim: Claim) -> None:
        """The claim never reached Redis (or its answer was lost): give its reservations back."""
        if claim.leases_global:
            self._global_claiming = False
        for le, i in claim.bucket_reserved:
            le.free.append(i)
        for g in claim.global_reserved:
            g.reserved -= 1

    def _pool_bucket(self, lease: _BucketLease) -> None:
        leases = self._pool.setdefault(lease.key, [])
        if lease not in leases:
            leases.append(lease)

    # --- responses --------------------------------------------------------------------------------
    def answered(self, ticket: Ticket, info: ResponseInfo, now: float) -> None:
        """Apply a response at once; queue a report when it changes shared state, else a settlement."""
        lease, key = ticket._lease, (ticket.route_key, ticket.major)
        report = info.status == 429 or info.counts_as_invalid
        if info.status == 429:
            if info.is_global or info.scope == "global":
                self._block_global(now + info.retry_after, now)
            else:
                self._drop_pool(key, refund=False)
        if ticket.bucket and info.status != 429:
            if ticket.bucket.startswith("r:") or (info.bucket and f"{info.bucket}:{ticket.major}" != ticket.bucket):
                report = True  # a hash to learn, or one that changed
                self._drop_pool(key, refund=True)
            elif lease is not None and info.has_limits:
                assert info.limit is not None and info.remaining is not None and info.reset_after is not None
                if not lease.confirmed and not lease.first_reported:
                    report = lease.first_reported = True  # the server's reset replaces Redis's provisional one
                if info.limit != lease.limit:
                    report = True
                    self._drop_pool(key, refund=False)
                elif now + info.reset_after + _RESET_SLACK > lease.reset_lo:
                    report = True  # Discord's window may end later than the one the lease was granted in
                excess = len(lease.free) - info.remaining
                if excess > 0:
                    report = True  # Discord has fewer left than this lease still holds: drop the difference
                    dropped, lease.free = lease.free[:excess], lease.free[excess:]
                    for i in dropped:
                        self._settle(("b", lease.bid, lease.lid, i, 1, lease.win))
        if report:
            token = ("b", lease.bid, lease.lid, ticket._index, 1, lease.win) if lease is not None else None
            self._reports.append((self._update_args(ticket, info), token, now))
            self.urgent = True
        elif lease is not None:
            self._settle(("b", lease.bid, lease.lid, ticket._index, 1, lease.win))

    def failed(self, ticket: Ticket) -> None:
        """The request failed without a response: free its token now (a probe may be waiting on it)."""
        lease = ticket._lease
        if lease is not None:
            self._settle(("b", lease.bid, lease.lid, ticket._index, 1, lease.win))
            self.urgent = True

    def discard(self, ticket: Ticket, now: float) -> None:
        """A ticket handed out and never used (its request was cancelled before leaving)."""
        lease, glease = ticket._lease, ticket._glease
        if lease is not None:
            if now < lease.end:
                lease.free.append(ticket._index)
                self._pool_bucket(lease)
            else:
                self._settle(("u", lease.bid, lease.lid, ticket._index, 1, lease.win))
        if glease is not None and glease in self._gpool and glease.used > 0:
            glease.used -= 1

    def _update_args(self, ticket: Ticket, info: ResponseInfo) -> list[str]:
        has = info.has_limits
        return ["", ticket.route_key, ticket.major, self.prefix, ticket.bucket, str(ticket.window), ticket.token,
                str(info.status), str(info.limit) if has else "", str(info.remaining) if has else "0",
                _ms(info.reset_after or 0.0), info.bucket, info.scope, _ms(info.retry_after),
                _flag(info.is_global), self._guard_window_ms, self._keep_ms, _flag(info.counts_as_invalid), "0"]

    def _block_global(self, until: float, now: float) -> None:
        self._global_blocked_until = max(self._global_blocked_until, until)
        for g in list(self._gpool):
            if g.reserved == 0:
                g.end = min(g.end, now)
                self._maybe_settle_global(g, now)

    def _drop_pool(self, key: Key, *, refund: bool) -> None:
        for lease in self._pool.pop(key, ()):
            for i in lease.free:
                self._settle(("u" if refund else "b", lease.bid, lease.lid, i, 1, lease.win))
            lease.free = []

    # --- expiry and settlement ----------------------------------------------------------------------
    def expire(self, now: float) -> None:
        """Return what expired leases left unused, and settle spent global leases."""
        for key, leases in list(self._pool.items()):
            keep = []
            for lease in leases:
                if now < lease.end and lease.free:
                    keep.append(lease)
                    continue
                for first, count in _runs(lease.free):
                    self._settle(("u", lease.bid, lease.lid, first, count, lease.win))
                lease.free = []
            if keep:
                self._pool[key] = keep
            else:
                del self._pool[key]
        for g in list(self._gpool):
            self._maybe_settle_global(g, now)

    def _maybe_settle_global(self, g: _GlobalLease, now: float) -> None:
        if g not in self._gpool or g.reserved > 0 or (g.available > 0 and now < g.end):
            return
        self._gpool.remove(g)
        if g.used > 0:
            self._settle(("r", "", g.lid, g.first, g.used, 0))
        if g.count > g.used:
            self._settle(("d", "", g.lid, g.first + g.used, g.count - g.used, 0))

    def next_deadline(self) -> float | None:
        """When the earliest lease this cluster holds ends (local time), or None."""
        ends = [le.end for leases in self._pool.values() for le in leases] + [g.end for g in self._gpool]
        return min(ends, default=None)

    def _settle(self, op: SettleOp) -> None:
        self._settles.append(op)

    @property
    def pending(self) -> bool:
        """True when reports or settlements wait to be sent."""
        return bool(self._reports or self._settles)

    def take_reports(self, now: float) -> list[tuple[list[str], SettleOp | None]]:
        """The reports to send at ``now`` (``UPDATE`` ARGVs, each with the settlement of its token).

        Each says how long ago its response arrived, so that Redis counts the reset from then
        rather than from when the report happens to reach it. The queue empties.
        """
        reports, self._reports = self._reports, []
        self.urgent = bool(self._settles) and self.urgent
        for args, _, received in reports:
            args[-1] = _ms(max(now - received, 0.0))
        return [(args, token) for args, token, _ in reports]

    def take_settles(self) -> list[SettleOp]:
        """The settlements to send now; the queue empties."""
        settles, self._settles = self._settles, []
        self.urgent = False
        return settles

    def clear(self) -> list[SettleOp]:
        """Forget every lease (Redis is unreachable); return the settlements Redis should get once it is back."""
        ops = list(self._settles) + [token for _, token, _ in self._reports if token is not None]
        for leases in self._pool.values():
            for lease in leases:
                ops += [("u", lease.bid, lease.lid, first, count, lease.win) for first, count in _runs(lease.free)]
                lease.free = []
        for g in self._gpool:
            if g.count > g.used:
                ops.append(("d", "", g.lid, g.first + g.used, g.count - g.used, 0))
        self._pool.clear()
        self._gpool.clear()
        self._reports, self._settles, self.urgent = [], [], False
        self._global_claiming = False
        return ops

    def settle_args(self, ops: list[SettleOp]) -> list[str]:
        """The ``SETTLE`` ARGV for ``ops``."""
        args = ["", self.prefix]
        for kind, bid, lid, first, count, win in ops:
            args += [kind, bid, lid, str(first), str(count), str(win)]
        return args


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """``[3, 4, 5, 9]`` → ``[(3, 3), (9, 1)]``: (first, count) runs of consecutive indices."""
    out: list[tuple[int, int]] = []
    for i in sorted(indices):
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.3f}"


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _int(value: object) -> int:
    return int(value)  # type: ignore[call-overload, no-any-return]
