"""Admission: bounded running commands, a bounded FIFO queue, deferral while waiting, shedding."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from innkeeper.errors import CommandError, ErrorCode
from shard.pipeline.admission import DEFERRED, SHED, Admission


async def _drain() -> None:
    """Let every runnable task run until none can progress (no I/O here: a few turns suffice)."""
    for _ in range(6):
        await asyncio.sleep(0)


async def test_places_up_to_the_bound_are_given_at_once() -> None:
    admission = Admission(max_running=3, max_queued=2)
    for _ in range(3):
        await asyncio.wait_for(admission.enter(), 1)
    assert (admission.running, admission.queued) == (3, 0)
    admission.leave()
    assert admission.running == 2


async def test_a_full_queue_sheds_with_its_own_code() -> None:
    admission = Admission(max_running=1, max_queued=1)
    await admission.enter()
    waiting = asyncio.ensure_future(admission.enter())
    await _drain()
    shed_before = SHED.labels("queue_full")._value.get()
    with pytest.raises(CommandError) as info:
        await admission.enter()
    assert info.value.code is ErrorCode.COMMAND_SHED
    assert "busy" in info.value.user_message
    assert SHED.labels("queue_full")._value.get() == shed_before + 1
    assert admission.snapshot()["shed"] == 1
    admission.leave()  # the waiting one gets the place
    await asyncio.wait_for(waiting, 1)
    assert (admission.running, admission.queued) == (1, 0)


async def test_a_place_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    admission = Admission(max_running=1, max_queued=10)
    order: list[str] = []
    await admission.enter()

    async def command(name: str) -> None:
        await admission.enter()
        order.append(name)

    first = asyncio.ensure_future(command("first"))
    await _drain()
    admission.leave()  # hands the place to "first", which has not resumed yet...
    late = asyncio.ensure_future(command("late"))  # ...so a newcomer now must queue behind it
    await _drain()
    assert order == ["first"] and admission.queued == 1
    admission.leave()
    await asyncio.wait_for(asyncio.gather(first, late), 1)
    assert order == ["first", "late"]


async def test_a_waiting_slash_command_is_deferred_once_at_its_age() -> None:
    admission = Admission(max_running=1, max_queued=5, defer_after=0.05)
    await admission.enter()
    deferred = asyncio.Event()
    calls = 0

    async def defer() -> None:
        nonlocal calls
        calls += 1
        deferred.set()

    before = DEFERRED._value.get()
    waiting = asyncio.ensure_future(admission.enter(age=0.0, defer=defer))
    await asyncio.wait_for(deferred.wait(), 2)
    assert not waiting.done() and calls == 1  # deferred while still queued
    assert DEFERRED._value.get() == before + 1
    admission.leave()
    await asyncio.wait_for(waiting, 1)
    assert calls == 1


async def test_an_interaction_already_old_is_deferred_at_once_and_a_young_one_admitted_is_not() -> None:
    admission = Admission(max_running=1, max_queued=5, defer_after=1.0)
    deferred: list[str] = []

    async def defer_young() -> None:
        deferred.append("young")

    await admission.enter(age=0.0, defer=defer_young)  # a free place: never deferred
    old_deferred = asyncio.Event()

    async def defer_old() -> None:
        deferred.append("old")
        old_deferred.set()

    waiting = asyncio.ensure_future(admission.enter(age=5.0, defer=defer_old))
    await asyncio.wait_for(old_deferred.wait(), 1)  # far sooner than defer_after: it was old already
    admission.leave()
    await asyncio.wait_for(waiting, 1)
    assert deferred == ["old"]


async def test_a_failed_deferral_keeps_the_command_waiting() -> None:
    admission = Admission(max_running=1, max_queued=5, defer_after=0.01)
    await admission.enter()
    tried = asyncio.Event()

    async def defer() -> None:
        tried.set()
        raise RuntimeError("Discord said no")

    waiting = asyncio.ensure_future(admission.enter(defer=defer))
    await asyncio.wait_for(tried.wait(), 2)
    await _drain()
    assert not waiting.done()
    admission.leave()
    await asyncio.wait_for(waiting, 1)


async def test_waiting_past_max_wait_is_shed() -> None:
    admission = Admission(max_running=1, max_queued=5, max_wait=0.05)
    await admission.enter()
    before = SHED.labels("waited_too_long")._value.get()
    with pytest.raises(CommandError) as info:
        await asyncio.wait_for(admission.enter(), 2)
    assert info.value.code is ErrorCode.COMMAND_SHED
    assert SHED.labels("waited_too_long")._value.get() == before + 1
    assert admission.queued == 0
    admission.leave()
    assert admission.running == 0  # the shed one never held the place


async def test_a_cancelled_waiter_leaves_the_queue_and_one_cancelled_after_its_turn_passes_it_on() -> None:
    admission = Admission(max_running=1, max_queued=5)
    await admission.enter()
    gone = asyncio.ensure_future(admission.enter())
    await _drain()
    gone.cancel()
    await _drain()
    assert admission.queued == 0
    granted_then_cancelled = asyncio.ensure_future(admission.enter())
    after = asyncio.ensure_future(admission.enter())
    await _drain()
    admission.leave()  # the place goes to the first waiter...
    granted_then_cancelled.cancel()  # ...which is cancelled before it resumes: it must pass the place on
    await asyncio.wait_for(after, 1)
    assert (admission.running, admission.queued) == (1, 0)


async def test_a_queue_too_slow_to_serve_in_time_sheds_at_once() -> None:
    now = [100.0]
    admission = Admission(max_running=2, max_queued=50, max_queue_delay=1.0, clock=lambda: now[0])
    assert admission.expected_wait() == 0.0 and not admission.saturated
    first = await admission.enter()
    now[0] += 0.8  # commands have been holding their places 0.8 s
    admission.leave(first)
    held = [await admission.enter(), await admission.enter()]  # both places taken
    assert admission.expected_wait() == pytest.approx(0.4)  # (0 waiting + 1) × 0.8 s ÷ 2 places
    waiting = [asyncio.ensure_future(admission.enter()) for _ in range(2)]  # 0.4 s, then 0.8 s: both fit
    await _drain()
    assert admission.queued == 2 and admission.saturated  # a third would wait 1.2 s > 1 s
    before = SHED.labels("queue_too_slow")._value.get()
    with pytest.raises(CommandError) as info:
        await admission.enter()
    assert info.value.code is ErrorCode.COMMAND_SHED
    assert SHED.labels("queue_too_slow")._value.get() == before + 1
    for token in held:
        admission.leave(token)
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert not admission.saturated


async def test_early_sheds_count_as_shed() -> None:
    admission = Admission(max_running=1, max_queued=0)
    await admission.enter()
    assert admission.saturated
    before = SHED.labels("early")._value.get()
    admission.shed_early()
    assert SHED.labels("early")._value.get() == before + 1 and admission.snapshot()["shed"] == 1


def test_settings_are_checked() -> None:
    for bad in ({"max_running": 0}, {"max_queued": -1}, {"defer_after": 3.0}, {"max_wait": 0},
                {"max_queue_delay": 0}):
        with pytest.raises(ValueError):
            Admission(**bad)  # type: ignore[arg-type]


_OPS = st.lists(st.one_of(st.just(("arrive", 0)), st.tuples(st.just("finish"), st.integers(0, 20)),
                          st.tuples(st.just("cancel"), st.integers(0, 20))), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, max_running=st.integers(1, 4), max_queued=st.integers(0, 4))
def test_any_arrival_order_keeps_the_bounds_fifo_and_no_lost_place(ops: list[tuple[str, int]], max_running: int,
                                                                   max_queued: int) -> None:
    asyncio.run(_replay(ops, max_running, max_queued))


async def _replay(ops: list[tuple[str, int]], max_running: int, max_queued: int) -> None:
    admission = Admission(max_running=max_running, max_queued=max_queued)
    admitted: list[int] = []  # arrival numbers, in the order they got a place
    finish: dict[int, asyncio.Event] = {}
    tasks: dict[int, asyncio.Task[None]] = {}
    shed: set[int] = set()
    running: set[int] = set()

    async def command(n: int) -> None:
        try:
            await admission.enter()
        except CommandError:
            shed.add(n)
            return
        admitted.append(n)
        running.add(n)
        try:
            await finish[n].wait()
        finally:
            running.discard(n)
            admission.leave()

    for op, index in ops:
        waiting = [n for n, t in tasks.items() if not t.done() and n not in running and n not in shed]
        if op == "arrive":
            n = len(tasks)
            full = not (len(running) < max_running and not waiting) and len(waiting) >= max_queued
            finish[n] = asyncio.Event()
            tasks[n] = asyncio.ensure_future(command(n))
            await _drain()
            assert (n in shed) == full, "shed exactly when every place and the whole queue were taken"
        elif op == "finish" and running:
            finish[sorted(running)[index % len(running)]].set()
        elif op == "cancel" and waiting:
            tasks[waiting[index % len(waiting)]].cancel()
        await _drain()
        still_waiting = [n for n, t in tasks.items() if not t.done() and n not in running and n not in shed]
        assert admission.running == len(running) <= max_running
        assert admission.queued == len(still_waiting) <= max_queued
        assert not still_waiting or len(running) == max_running, "a place was free while a command waited"
        assert admitted == sorted(admitted), "places were given out of arrival order"
    for event in finish.values():
        event.set()
    await _drain()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert (admission.running, admission.queued) == (0, 0)
