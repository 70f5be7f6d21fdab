"""The garbage-collector policy: frozen once READY, again after a reconnect and on its interval; every pause timed."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shard.gc_policy import FROZEN, PAUSES, CollectorPolicy


class _Tracker:
    def __init__(self) -> None:
        self.state = "STARTING"

    def cluster_state(self) -> str:
        return self.state


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def _pauses(generation: int) -> float:
    value = PAUSES.labels(str(generation))._sum.get()  # noqa: SLF001 - the histogram's running sum
    return float(value)


async def test_freezes_once_every_shard_is_ready_and_again_after_a_shard_comes_back() -> None:
    tracker = _Tracker()
    policy = CollectorPolicy(None, tracker, refreeze_s=0, settle_s=0)  # type: ignore[arg-type]
    await policy.check()
    assert policy.freezes == 0 and gc.get_freeze_count() == 0
    tracker.state = "READY"  # the READY payloads arrived, the guilds not yet
    await policy.check()
    assert policy.freezes == 0
    await policy.on_shard_ready(0)  # discord.py: the shard's guilds are all in
    tracker.state = "DEGRADED"
    await policy.check()
    assert policy.freezes == 0  # not while a shard is down
    tracker.state = "READY"
    await policy.check()
    assert policy.freezes == 1
    assert FROZEN._value.get() >= gc.get_freeze_count() > 0  # noqa: SLF001 - frozen objects may die since
    await policy.check()
    assert policy.freezes == 1  # still READY: nothing new to freeze
    await policy.on_shard_ready(1)  # a fresh session rebuilt shard 1's guilds
    await policy.check()
    assert policy.freezes == 2


async def test_refreeze_interval_unfreezes_and_frees_dead_cycles() -> None:
    tracker = _Tracker()
    tracker.state = "READY"
    policy = CollectorPolicy(None, tracker, refreeze_s=0.0001, settle_s=0)  # type: ignore[arg-type]
    await policy.on_shard_ready(0)
    await policy.check()

    class Node:
        def __init__(self) -> None:
            self.me = self

    cycles = [Node() for _ in range(1000)]
    gc.collect()
    gc.freeze()  # frozen with the rest, as a guild cache would be
    del cycles  # now unreachable, but frozen: no collection can free it
    frozen = gc.get_freeze_count()
    policy.frozen_at = 0.0  # the interval has passed
    await policy.check()
    assert policy.freezes == 2
    assert gc.get_freeze_count() <= frozen - 1000  # the dead cycles were collected, not frozen again


async def test_every_collection_is_timed_by_generation() -> None:
    policy = CollectorPolicy(None, _Tracker(), freeze=False)  # type: ignore[arg-type]
    await policy.start()
    try:
        before = _pauses(2), _pauses(0)
        gc.collect(2)
        gc.collect(0)
        assert _pauses(2) > before[0] and _pauses(0) > before[1]
    finally:
        await policy.stop()
    after = _pauses(2)
    gc.collect(2)
    assert _pauses(2) == after  # stopped: no longer timed
