"""The circuit breaker (:mod:`innkeeper.breakers`): its states, and outcomes arriving in any order.

Calls overlap, so outcomes reach the breaker in an order unrelated to the order calls were admitted.
Hypothesis drives a breaker with arbitrary interleavings of admissions, outcomes, releases and the
passing of time, and checks it against the rules written in the module docstring after every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from innkeeper import deadline
from innkeeper.breakers import Breaker, Breakers, BreakerState, DependencyDown, Permit
from innkeeper.errors import ErrorCode
from tests.support import ManualClock

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


def make(clock: ManualClock, **options: float) -> Breaker:
    params: dict[str, float] = {"threshold": 3, "open_for": 5.0, "max_open_for": 20.0}
    params.update(options)
    return Breaker("unit", clock=clock, **params)  # type: ignore[arg-type]


def test_threshold_failures_in_a_row_open_it_and_a_success_resets_the_run() -> None:
    clock = ManualClock()
    b = make(clock)
    for _ in range(2):
        b.failure(b.enter())  # type: ignore[arg-type]
    b.success(b.enter())  # type: ignore[arg-type]
    for _ in range(2):
        b.failure(b.enter())  # type: ignore[arg-type]
    assert b.state is CLOSED
    b.failure(b.enter())  # type: ignore[arg-type]
    assert b.state is OPEN and b.enter() is None and b.rejected == 1
    assert b.retry_after() == pytest.approx(5.0)


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = ManualClock()
    b = make(clock)
    for _ in range(3):
        b.failure(b.enter())  # type: ignore[arg-type]
    clock.advance(5.0)
    assert b.state is HALF_OPEN
    probe = b.enter()
    assert probe is not None and probe.probe
    assert b.enter() is None and b.refuses()  # one probe at a time
    b.failure(probe)
    assert b.state is OPEN and b.retry_after() == pytest.approx(10.0)  # twice as long after a failed probe
    clock.advance(10.0)
    b.failure(b.enter())  # type: ignore[arg-type]
    assert b.retry_after() == pytest.approx(20.0)
    clock.advance(20.0)
    b.failure(b.enter())  # type: ignore[arg-type]
    assert b.retry_after() == pytest.approx(20.0)  # capped at max_open_for
    clock.advance(20.0)
    probe = b.enter()
    assert probe is not None
    b.success(probe)
    assert b.state is CLOSED and b.opened == 4
    for _ in range(3):
        b.failure(b.enter())  # type: ignore[arg-type]
    assert b.retry_after() == pytest.approx(5.0)  # closing resets the doubling


def test_a_released_or_lost_probe_frees_its_slot() -> None:
    clock = ManualClock()
    b = make(clock)
    for _ in range(3):
        b.failure(b.enter())  # type: ignore[arg-type]
    clock.advance(5.0)
    probe = b.enter()
    assert probe is not None
    b.release(probe)  # its caller was cancelled early: nothing learned
    assert b.state is HALF_OPEN
    lost = b.enter()
    assert lost is not None and b.enter() is None
    clock.advance(5.0)  # never reported back: after open_for another probe may go
    again = b.enter()
    assert again is not None and again.probe
    b.success(lost)  # the lost one's answer still counts: same generation
    assert b.state is CLOSED


def test_observe_counts_only_while_closed() -> None:
    clock = ManualClock()
    b = make(clock)
    b.observe(False)
    b.observe(False)
    b.observe(True)
    b.observe(False)
    b.observe(False)
    assert b.state is CLOSED
    b.observe(False)
    assert b.state is OPEN
    clock.advance(5.0)
    b.observe(True)  # a reply on an old connection is not a probe
    assert b.state is HALF_OPEN


def test_breakers_check_names_the_dependency_and_takes_no_probe() -> None:
    clock = ManualClock()
    breakers = Breakers(("postgres", "redis"), threshold=1, open_for=5.0, clock=clock)
    breakers.check(("postgres", "redis"))
    breakers["postgres"].failure(breakers["postgres"].enter())  # type: ignore[arg-type]
    breakers.check(("redis",))
    with pytest.raises(DependencyDown) as info:
        breakers.check(("redis", "postgres"))
    err = info.value
    assert err.code is ErrorCode.DEPENDENCY_DOWN and err.dependency == "postgres"
    assert err.user_message.startswith("The database is unreachable right now")
    assert "about 5 s" in err.user_message
    assert breakers.down() == ["postgres"]
    assert breakers.describe()["postgres"] == {"state": "open", "retry_after_s": 5.0, "opened": 1}
    clock.advance(5.0)
    breakers.check(("postgres",))  # half-open with the slot free: the command runs and probes
    assert breakers["postgres"].enter() is not None  # the slot was not taken by check()


def test_state_is_exported() -> None:
    clock = ManualClock()
    b = Breaker("unit_export", threshold=1, clock=clock)
    assert REGISTRY.get_sample_value("innkeeper_breaker_state", {"dependency": "unit_export"}) == 0
    b.failure(b.enter())  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value("innkeeper_breaker_state", {"dependency": "unit_export"}) == 2
    assert REGISTRY.get_sample_value("innkeeper_breaker_transitions_total",
                                     {"dependency": "unit_export", "state": "open"}) == 1
    b.enter()
    assert REGISTRY.get_sample_value("innkeeper_breaker_rejections_total", {"dependency": "unit_export"}) == 1


def test_bad_parameters_are_refused() -> None:
    for bad in ({"threshold": 0}, {"open_for": 0}, {"open_for": 10, "max_open_for": 5}, {"probes": 0}):
        with pytest.raises(ValueError):
            Breaker("x", **bad)  # type: ignore[arg-type]


# --- arrival orders ------------------------------------------------------------------------------------

@dataclass
class Call:
    permit: Permit


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enter"), st.integers(0, 0)),
        st.tuples(st.sampled_from(["ok", "fail", "release"]), st.integers(0, 50)),
        st.tuples(st.just("wait"), st.integers(1, 30)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, threshold=st.integers(1, 4), probes=st.integers(1, 3))
def test_any_arrival_order_follows_the_rules(ops: list[tuple[str, int]], threshold: int, probes: int) -> None:
    clock = ManualClock()
    b = Breaker("orders", threshold=threshold, open_for=5.0, max_open_for=40.0, probes=probes, clock=clock)
    out: list[Call] = []
    run = 0  # failures in a row of the current generation while closed, as the rules count them
    for op, arg in ops:
        before_state, before_gen = b.state, b.generation
        if op == "wait":
            clock.advance(arg / 2)
            state = b.state
            if state is not before_state:
                assert (before_state, state) == (OPEN, HALF_OPEN)  # time only ever ends an open spell
            continue
        if op == "enter":
            permit = b.enter()
            if before_state is CLOSED:
                assert permit is not None and not permit.probe
            elif before_state is OPEN:
                assert permit is None  # open and not yet due: refused (b.state already moved it otherwise)
            else:
                live = [c for c in out if c.permit.probe and c.permit.generation == b.generation]
                if permit is None:
                    assert len(live) >= probes or b.refuses()
                else:
                    assert permit.probe
            if permit is not None:
                out.append(Call(permit))
            assert b.generation == before_gen
            continue
        if not out:
            continue
        call = out.pop(arg % len(out))
        stale = call.permit.generation != b.generation
        {"ok": b.success, "fail": b.failure, "release": b.release}[op](call.permit)
        after = b.state
        if stale or op == "release":
            assert (after, b.generation) == (before_state, before_gen), "a stale outcome or a release changed state"
            continue
        if before_state is CLOSED:
            run = 0 if op == "ok" else run + 1
            if run >= threshold:
                assert after is OPEN and b.generation == before_gen + 1
                run = 0
            else:
                assert after is CLOSED and b.generation == before_gen
        elif before_state is HALF_OPEN:
            assert call.permit.probe
            assert after is (CLOSED if op == "ok" else OPEN) and b.generation == before_gen + 1
            run = 0
        else:  # an outcome of the current generation while open: impossible, no permit is issued then
            raise AssertionError("a permit of an open breaker's generation")
        if after is not CLOSED:
            run = 0
        # invariant: never more live probes than allowed
        assert sum(1 for c in out if c.permit.probe and c.permit.generation == b.generation) <= probes


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(3, 12))
def test_late_answers_of_calls_admitted_before_it_opened_change_nothing(data: st.DataObject, n: int) -> None:
    """Many calls admitted while closed; answers arrive in any order. Once ``threshold`` of the
    failures opened it, the rest (successes included) are stale: it stays open until the probe."""
    clock = ManualClock()
    b = Breaker("late", threshold=3, open_for=5.0, clock=clock)
    permits = [b.enter() for _ in range(n)]
    verdicts = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    order = data.draw(st.permutations(range(n)))
    run = 0
    opened_at = None
    for step, i in enumerate(order):
        p = permits[i]
        assert p is not None
        if verdicts[i]:
            b.success(p)
            if opened_at is None:
                run = 0
        else:
            b.failure(p)
            if opened_at is None:
                run += 1
                if run == 3:
                    opened_at = step
        assert b.state is (OPEN if opened_at is not None else CLOSED)
    assert b.opened == (1 if opened_at is not None else 0)


# --- the deadline --------------------------------------------------------------------------------------

def test_deadline_nests_to_the_earlier_and_bounds_retries() -> None:
    assert deadline.remaining() is None and deadline.allows(1e9)
    with deadline.within(10.0):
        left = deadline.remaining()
        assert left is not None and 9.0 < left <= 10.0
        with deadline.within(60.0):  # a longer inner block keeps the outer deadline
            inner = deadline.remaining()
            assert inner is not None and inner <= 10.0
        with deadline.within(1.0):
            assert deadline.allows(0.5) and not deadline.allows(1.5)
        assert deadline.allows(5.0) and not deadline.allows(11.0)
    assert deadline.remaining() is None
