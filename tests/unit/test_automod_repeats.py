"""Copy counters: the repeated-message rule's windows, and memory that stays bounded and comes back."""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from shard.automod.repeats import RepeatTracker
from shard.automod.rules import RepeatRule

HIGH = RepeatRule(3, 10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_nth_copy_within_the_window_breaks_the_rule_and_spam_keeps_being_caught() -> None:
    clock = Clock()
    t = RepeatTracker(clock=clock)
    assert [t.count(1, 42, HIGH) for _ in range(3)] == [1, 2, 3]
    clock.now += 9.0
    assert t.count(1, 42, HIGH) == 4  # caught: the window restarted at the 3rd copy
    clock.now += 9.0
    assert t.count(1, 42, HIGH) == 5  # still within 10 s of the last caught copy
    clock.now += 10.0
    assert t.count(1, 42, HIGH) == 1  # quiet for a whole window: a fresh start
    assert t.count(2, 42, HIGH) == 1 and t.count(1, 43, HIGH) == 1  # other guilds, other messages


def test_copies_spread_over_more_than_the_window_are_not_repeats() -> None:
    clock = Clock()
    t = RepeatTracker(clock=clock)
    assert t.count(1, 7, HIGH) == 1
    clock.now += 6.0
    assert t.count(1, 7, HIGH) == 2
    clock.now += 6.0  # 12 s after the first copy
    assert t.count(1, 7, HIGH) == 1


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 50), st.floats(0, 4)), max_size=300))
@settings(max_examples=100)
def test_the_caps_always_hold_and_the_size_adds_up(events: list[tuple[int, int, float]]) -> None:
    clock = Clock()
    t = RepeatTracker(per_guild=8, max_entries=40, clock=clock)
    for guild, key, step in events:
        clock.now += step
        t.count(guild, key, HIGH)
        assert len(t) <= 40
        assert all(len(g) <= 8 for g in t._guilds.values())
        assert len(t) == sum(len(g) for g in t._guilds.values())
    t.sweep(10.0)
    assert len(t) == sum(len(g) for g in t._guilds.values())


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 6)), max_size=60))
@settings(max_examples=200)
def test_generations_count_exactly_like_a_plain_window(events: list[tuple[int, float]]) -> None:
    """Against a model that keeps every copy's time: the same answer at every message."""
    clock = Clock()
    t = RepeatTracker(clock=clock)
    model: dict[int, tuple[float, int]] = {}
    for key, step in events:
        clock.now += step
        start, copies = model.get(key, (-1e9, 0))
        if start <= clock.now - HIGH.window_s:
            start, copies = clock.now, 0
        copies += 1
        if copies >= HIGH.copies:
            start = clock.now
        model[key] = (start, copies)
        assert t.count(1, key, HIGH) == copies
        if step > 3:
            t.sweep(10.0)  # sweeps never change an answer


def test_a_raid_in_one_guild_drops_its_older_half_and_keeps_counting() -> None:
    clock = Clock()
    t = RepeatTracker(per_guild=6, max_entries=100, clock=clock)
    for key in range(10):
        t.count(1, key, HIGH)
    assert len(t) <= 6
    assert t.count(1, 9, HIGH) == 2  # a recent message still counts its copies
    assert t.count(1, 0, HIGH) == 1  # the oldest was forgotten


def test_past_the_total_the_least_recently_active_guilds_go_first() -> None:
    clock = Clock()
    t = RepeatTracker(per_guild=10, max_entries=4, clock=clock)
    t.count(1, 1, HIGH)
    t.count(1, 2, HIGH)
    t.count(2, 1, HIGH)
    t.count(3, 1, HIGH)
    assert len(t) == 4 and t.guilds == 3
    t.count(2, 2, HIGH)  # one too many: guild 1, the least recently active, is forgotten
    assert len(t) == 3 and t.guilds == 2
    assert t.count(2, 1, HIGH) == 2 and t.count(1, 1, HIGH) == 1


def test_memory_comes_back_after_a_burst() -> None:
    clock = Clock()
    t = RepeatTracker(per_guild=1000, max_entries=60_000, clock=clock)
    for i in range(200):  # warm the interpreter's own caches first
        t.count(i, i, HIGH)
    clock.now += 11.0
    t.sweep(10.0)
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for i in range(50_000):  # a burst: 50,000 distinct messages over 500 guilds
            t.count(i % 500, hash(("author", i)), HIGH)
        during, _ = tracemalloc.get_traced_memory()
        assert len(t) == 50_000 and during - base > 2_000_000  # about 85 bytes a counter
        clock.now += 11.0
        assert t.sweep(10.0) == 50_000
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(t) == 0 and t.guilds == 0
    assert after - base < 100_000, (base, during, after)


def test_a_burst_is_forgotten_within_two_windows_and_quiet_guilds_by_the_sweep() -> None:
    clock = Clock()
    t = RepeatTracker(clock=clock)
    for key in range(100):
        t.count(5, key, HIGH)
        t.count(7, key, HIGH)
    clock.now += 11.0
    assert t.count(5, 1000, HIGH) == 1 and len(t) == 201  # guild 5's burst is the previous generation now
    assert t.sweep(10.0) == 100 and t.guilds == 1  # guild 7 went quiet: forgotten without a message
    clock.now += 11.0
    assert t.count(5, 1000, HIGH) == 1 and len(t) == 2  # the burst's generation is gone
    clock.now += 11.0
    assert t.sweep(10.0) == 2 and len(t) == 0 and t.guilds == 0


def test_past_the_total_a_guild_active_within_the_window_gets_a_second_chance() -> None:
    clock = Clock()
    t = RepeatTracker(per_guild=10, max_entries=5, clock=clock)
    t.count(1, 1, HIGH)  # guild 1 came first...
    for key in (1, 2, 3):
        t.count(2, key, HIGH)
    clock.now += 15.0
    t.count(1, 2, HIGH)  # ...but is still active; guild 2 went quiet
    t.count(3, 1, HIGH)  # one too many: guild 2 goes, guild 1 is passed over
    assert set(t._guilds) == {1, 3} and len(t) == 3
