"""The one jittered backoff every retry loop uses."""

from __future__ import annotations

import random

import pytest

from innkeeper.backoff import Backoff


def test_backoff_grows_to_cap_with_jitter() -> None:
    b = Backoff(0.1, 2.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceilings.append(b.ceiling())
        d = b.next()
        assert 0 < d <= ceilings[-1]
    assert ceilings[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert ceilings[-1] == 2.0
    assert b.attempts == 8
    b.reset()
    assert b.ceiling() == 0.1 and b.attempts == 0
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(0.1, 1, jitter=1.5)


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_delays_stay_within_their_jitter_band(jitter: float) -> None:
    b = Backoff(0.2, 0.2, jitter=jitter, rng=random.Random(7))
    delays = [b.next() for _ in range(200)]
    assert all(max(0.02, 0.2 * (1 - jitter)) <= d <= 0.2 for d in delays)
    if jitter:
        assert len(set(delays)) > 100  # really random, so that many retrying clients spread out
    else:
        assert set(delays) == {0.2}
