"""The in-memory throttle (also the fallback while Redis is down): scopes, several rules; rules and messages."""

from __future__ import annotations

import pytest

from innkeeper.errors import UsageError
from ipc.throttle import MemoryThrottle
from shard.pipeline.throttling import ThrottleRule, throttle_message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_user_scope_is_a_sliding_window() -> None:
    clock = Clock()
    throttle = MemoryThrottle(clock=clock)
    roll = [ThrottleRule(3, 10.0, "user")]
    for _ in range(3):
        assert (await throttle.hit("roll", 1, 5, roll)).allowed
        clock.now += 1
    denied = await throttle.hit("roll", 1, 5, roll)
    assert not denied.allowed and denied.retry_after == pytest.approx(7.0)  # first use at t=0 frees at t=10
    assert (await throttle.hit("roll", 2, 5, roll)).allowed  # another user
    assert (await throttle.hit("other", 1, 5, [])).allowed  # no rules: not throttled
    assert (await throttle.hit("other", 1, 5, roll)).allowed  # another command: counted apart
    clock.now = 1000.0 + 10.0
    assert (await throttle.hit("roll", 1, 5, roll)).allowed


async def test_guild_channel_and_global_scopes() -> None:
    clock = Clock()
    throttle = MemoryThrottle(clock=clock)
    g, c, every = [ThrottleRule(2, 60, "guild")], [ThrottleRule(1, 60, "channel")], [ThrottleRule(2, 60, "global")]
    assert (await throttle.hit("g", 1, 100, g)).allowed and (await throttle.hit("g", 2, 100, g)).allowed
    assert not (await throttle.hit("g", 3, 100, g)).allowed  # any user of guild 100
    assert (await throttle.hit("g", 3, 200, g)).allowed
    assert (await throttle.hit("g", 4, None, g)).allowed and (await throttle.hit("g", 4, None, g)).allowed
    assert not (await throttle.hit("g", 4, None, g)).allowed  # DMs count per user
    assert (await throttle.hit("c", 1, 100, c, channel_id=7)).allowed
    assert not (await throttle.hit("c", 2, 100, c, channel_id=7)).allowed
    assert (await throttle.hit("c", 2, 100, c, channel_id=8)).allowed
    assert (await throttle.hit("all", 1, 1, every)).allowed and (await throttle.hit("all", 2, 2, every)).allowed
    assert not (await throttle.hit("all", 3, 3, every)).allowed


async def test_all_rules_must_allow_and_a_refusal_counts_nowhere() -> None:
    clock = Clock()
    rules = [ThrottleRule(2, 10, "user"), ThrottleRule(3, 60, "guild")]
    throttle = MemoryThrottle(clock=clock)
    assert (await throttle.hit("cmd", 1, 9, rules)).allowed and (await throttle.hit("cmd", 1, 9, rules)).allowed
    refused = await throttle.hit("cmd", 1, 9, rules)  # user rule refuses: the guild rule must not count it
    assert not refused.allowed and refused.retry_after == pytest.approx(10)
    assert (await throttle.hit("cmd", 2, 9, rules)).allowed  # the guild's third use
    result = await throttle.hit("cmd", 3, 9, rules)
    assert not result.allowed and result.retry_after == pytest.approx(60)


async def test_rules_of_different_periods_count_apart() -> None:
    throttle = MemoryThrottle(clock=Clock())
    assert (await throttle.hit("x", 1, 1, [ThrottleRule(1, 5)])).allowed
    assert not (await throttle.hit("x", 1, 1, [ThrottleRule(1, 5)])).allowed
    assert (await throttle.hit("x", 1, 1, [ThrottleRule(100, 1)])).allowed  # another rule, another key


def test_rules_describe_themselves() -> None:
    assert ThrottleRule(5, 10.0, "guild").describe() == "5 per 10 s per guild"
    assert ThrottleRule(1, 0.5).describe() == "1 per 0.5 s per user"


def test_messages_round_up() -> None:
    assert throttle_message(0.2) == "You're doing that too often — try again in 1 s."
    assert throttle_message(4.01) == "You're doing that too often — try again in 5 s."
    assert throttle_message(5.0) == "You're doing that too often — try again in 5 s."
    assert throttle_message(2.5).endswith("try again in 3 s.")


@pytest.mark.parametrize("args", [(0, 1.0, "user"), (1, 0, "user"), (1, 1.0, "planet"), (True, 1.0, "user")])
def test_bad_rules_are_refused(args: tuple[object, object, str]) -> None:
    with pytest.raises(UsageError):
        ThrottleRule(*args)  # type: ignore[arg-type]
