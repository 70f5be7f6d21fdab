"""The simulator's identify limits: one IDENTIFY per bucket per window, and the daily budget."""

from __future__ import annotations

import pytest

from simulator.identify import IdentifyLimiter, SessionStartBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_identify_per_bucket_per_window() -> None:
    clock = FakeClock()
    limiter = IdentifyLimiter(max_concurrency=4, window=5.0, clock=clock)
    # Shards 0..3 are four buckets: all start at once.
    assert all(limiter.try_acquire(s) for s in range(4))
    # Shards 4..7 share those buckets: refused inside the window.
    assert not any(limiter.try_acquire(s) for s in range(4, 8))
    assert limiter.retry_after(4) == pytest.approx(5.0)
    clock.now += 4.99
    assert not limiter.try_acquire(4)
    assert limiter.retry_after(4) == pytest.approx(0.01)
    clock.now += 0.01
    assert limiter.retry_after(4) == 0.0
    assert limiter.try_acquire(4)
    # The refused attempts did not move the window of bucket 1, which opens at the same time.
    assert limiter.try_acquire(5)
    assert not limiter.try_acquire(1)


def test_buckets_follow_max_concurrency() -> None:
    clock = FakeClock()
    limiter = IdentifyLimiter(max_concurrency=1, window=0.25, clock=clock)
    assert limiter.bucket(7) == 0
    assert limiter.try_acquire(0)
    assert not limiter.try_acquire(1)
    clock.now += 0.25
    assert limiter.try_acquire(1)
    with pytest.raises(ValueError):
        IdentifyLimiter(max_concurrency=0, window=5.0)


def test_daily_budget_counts_down_and_resets_after_the_period() -> None:
    clock = FakeClock()
    budget = SessionStartBudget(total=3, period=100.0, clock=clock)
    assert budget.remaining() == 3
    assert budget.reset_after_ms() == 100_000
    assert budget.try_use()
    clock.now += 40
    assert budget.try_use() and budget.try_use()
    assert budget.remaining() == 0
    assert not budget.try_use()
    assert budget.reset_after_ms() == 60_000
    clock.now += 60
    assert budget.remaining() == 3
    assert budget.try_use()
    assert budget.remaining() == 2


def test_daily_budget_can_be_refilled_or_set() -> None:
    clock = FakeClock()
    budget = SessionStartBudget(total=3, period=100.0, clock=clock)
    assert budget.try_use() and budget.try_use() and budget.try_use() and not budget.try_use()
    clock.now += 30
    budget.set_remaining(None)  # a fresh period: full, and reset_after a whole period away
    assert budget.remaining() == 3 and budget.reset_after_ms() == 100_000
    budget.set_remaining(1)  # one left of a period that starts now
    assert budget.remaining() == 1 and budget.reset_after_ms() == 100_000
    assert budget.try_use() and not budget.try_use()
    budget.set_remaining(0)
    assert budget.remaining() == 0
    budget.set_remaining(5)  # more than the total is a full budget
    assert budget.remaining() == 3
    with pytest.raises(ValueError):
        budget.set_remaining(-1)
