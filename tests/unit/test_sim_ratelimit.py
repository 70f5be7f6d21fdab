"""The simulator's Discord-like REST buckets, driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from simulator.config import SimConfig
from simulator.ratelimit import DEFAULT_BUCKET, BucketSpec, RateLimiter, default_buckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, global_rate: int = 1000) -> RateLimiter:
    return RateLimiter(global_rate, clock=clock, wall=clock.wall)


SEND = BucketSpec("send", 5, 5.0)


def test_bucket_allows_limit_then_rejects_until_reset(clock: FakeClock) -> None:
    rl = limiter(clock)
    remaining = [rl.hit(SEND, "c1").remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    clock.now += 1.25
    d = rl.hit(SEND, "c1")
    assert not d.allowed and d.scope == "user"
    assert d.retry_after == pytest.approx(3.75)
    clock.now += 3.75
    d = rl.hit(SEND, "c1")
    assert d.allowed and d.remaining == 4 and d.reset_after == pytest.approx(5.0)


def test_major_parameters_are_independent(clock: FakeClock) -> None:
    rl = limiter(clock)
    for _ in range(5):
        assert rl.hit(SEND, "c1").allowed
    assert not rl.hit(SEND, "c1").allowed
    assert rl.hit(SEND, "c2").allowed
    # the same major parameter in another bucket is another counter too
    other = BucketSpec("edit", 1, 5.0)
    assert rl.hit(other, "c1").allowed
    assert not rl.hit(other, "c1").allowed


def test_bucket_hash_is_stable_and_excludes_major(clock: FakeClock) -> None:
    rl = limiter(clock)
    a = rl.hit(SEND, "c1")
    b = rl.hit(SEND, "c2")
    assert a.bucket == b.bucket == BucketSpec("send", 1, 1.0).hash
    assert a.bucket != DEFAULT_BUCKET.hash
    assert len(a.bucket or "") == 32


def test_headers_on_success_and_rejection(clock: FakeClock) -> None:
    rl = limiter(clock)
    h = rl.hit(SEND, "c").headers()
    assert h["X-RateLimit-Limit"] == "5"
    assert h["X-RateLimit-Remaining"] == "4"
    assert float(h["X-RateLimit-Reset-After"]) == pytest.approx(5.0)
    assert float(h["X-RateLimit-Reset"]) == pytest.approx(clock.wall() + 5.0)
    assert h["X-RateLimit-Bucket"] == SEND.hash
    assert "Retry-After" not in h and "X-RateLimit-Scope" not in h
    for _ in range(4):
        rl.hit(SEND, "c")
    clock.now += 0.3
    d = rl.hit(SEND, "c")
    h = d.headers()
    assert h["X-RateLimit-Remaining"] == "0"
    assert h["X-RateLimit-Scope"] == "user"
    # Retry-After is the integer ceiling of retry_after (Discord's docs: 64.57 -> 65)
    assert h["Retry-After"] == str(math.ceil(4.7)) == "5"
    assert d.retry_after == pytest.approx(4.7)


def test_global_limit_across_buckets(clock: FakeClock) -> None:
    rl = limiter(clock, global_rate=3)
    big = BucketSpec("big", 100, 1.0)
    assert all(rl.hit(big, str(i)).allowed for i in range(3))
    clock.now += 0.4
    d = rl.hit(big, "x")
    assert not d.allowed and d.is_global
    assert d.retry_after == pytest.approx(0.6)
    h = d.headers()
    assert h == {"Retry-After": "1", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
    # a globally rejected request did not consume the route bucket
    clock.now += 0.6
    d = rl.hit(big, "x")
    assert d.allowed and d.remaining == 99


def test_exempt_routes_skip_the_global_limit(clock: FakeClock) -> None:
    rl = limiter(clock, global_rate=1)
    assert rl.hit(SEND, "a").allowed
    assert not rl.hit(SEND, "b").allowed
    assert rl.hit(SEND, "b", exempt_global=True).allowed
    # and exempt requests do not use up the global budget
    clock.now += 1.0
    assert rl.hit(SEND, "c", exempt_global=True).allowed
    assert rl.hit(SEND, "d").allowed


def test_route_rejection_still_counts_globally(clock: FakeClock) -> None:
    rl = limiter(clock, global_rate=7)
    tiny = BucketSpec("tiny", 1, 10.0)
    assert rl.hit(tiny, "m").allowed
    for _ in range(5):
        assert rl.hit(tiny, "m").scope == "user"
    assert rl.hit(tiny, "other").allowed  # 7th request in this second
    assert rl.hit(tiny, "third").scope == "global"


def test_expired_windows_are_pruned(clock: FakeClock) -> None:
    rl = limiter(clock, global_rate=10**9)
    for i in range(3000):
        rl.hit(SEND, str(i))
    assert len(rl) == 3000  # every window is live: pruning (at 1024 and 2048 windows) dropped none
    clock.now += 10  # every one of them has expired by now …
    for i in range(1095):
        rl.hit(SEND, f"n{i}")
    assert len(rl) == 4095  # … but they stay until the table reaches the next threshold (4096) …
    for i in range(1095, 1100):
        rl.hit(SEND, f"n{i}")
    assert len(rl) == 1100  # … where every expired window goes and only the live ones remain


def test_reset_forgets_everything(clock: FakeClock) -> None:
    rl = limiter(clock, global_rate=1)
    rl.hit(SEND, "a")
    assert not rl.hit(SEND, "a").allowed
    rl.reset()
    assert len(rl) == 0
    assert rl.hit(SEND, "a").allowed


def test_default_table_uses_config_for_message_sends() -> None:
    table = default_buckets(SimConfig(message_limit=3, message_window=2.0))
    spec = table["channel-messages-create"]
    assert (spec.limit, spec.window) == (3, 2.0)
    assert len({s.hash for s in table.values()}) == len(table)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        BucketSpec("x", 0, 1.0)
    with pytest.raises(ValueError):
        BucketSpec("x", 1, 0.0)
    with pytest.raises(ValueError):
        RateLimiter(0)
