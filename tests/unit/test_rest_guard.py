"""The per-process invalid-request guard, and how the REST hook uses it with and without a shared limiter."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from discord.http import Route
from multidict import CIMultiDict

from innkeeper.settings import Settings
from ipc.ratelimit import RequestRefused
from shard.rest_guard import LocalInvalidGuard
from shard.rest_hook import _ROUTE, INTERACTION_CALLBACK_PATH, RestHook, _RouteInfo


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_below_soft_nothing_happens_above_it_requests_wait_in_proportion() -> None:
    clock = Clock()
    guard = LocalInvalidGuard(soft=10, hard=20, max_delay=2.0, clock=clock)
    for _ in range(10):
        guard.record()
    assert guard.count() == 10 and guard.check() == 0.0
    for _ in range(5):
        guard.record()
    assert guard.check() == pytest.approx(1.0)  # halfway from soft to hard: half the maximum delay
    assert guard.delayed == 1


def test_at_hard_requests_are_refused_until_the_window_forgets() -> None:
    clock = Clock()
    guard = LocalInvalidGuard(soft=5, hard=10, window=600.0, slot=10.0, clock=clock)
    for _ in range(10):
        guard.record()
    with pytest.raises(RequestRefused) as info:
        guard.check()
    assert info.value.estimate == 10 and 590 <= info.value.retry_after <= 610
    assert guard.refused == 1
    clock.now += 300
    with pytest.raises(RequestRefused):
        guard.check()  # a sliding window: half of it later, the burst still counts in full
    clock.now += 311
    assert guard.count() == 0 and guard.check() == 0.0


def test_the_window_slides_slot_by_slot_and_never_under_counts() -> None:
    clock = Clock(0.0)
    guard = LocalInvalidGuard(soft=100, hard=200, window=60.0, slot=10.0, clock=clock)
    for t in range(0, 60, 5):  # two per slot, over one whole window
        clock.now = float(t)
        guard.record()
    clock.now = 59.0
    assert guard.count() == 12
    clock.now = 65.0  # the first slot [0, 10) is partly inside (5, 65]: still counted
    assert guard.count() == 12
    clock.now = 70.0  # ... and now wholly outside
    assert guard.count() == 10
    clock.now = 200.0
    assert guard.count() == 0


def test_the_thresholds_are_shared_by_the_processes_of_a_host() -> None:
    alone = LocalInvalidGuard.from_settings(Settings.from_env({}))
    assert (alone.soft, alone.hard) == (5000, 9000)
    four = LocalInvalidGuard.from_settings(Settings.from_env({"INNKEEPER_GUARD_PROCESSES": "4"}))
    assert (four.soft, four.hard) == (1250, 2250)  # four processes at their limit stay below one ban
    tiny = LocalInvalidGuard.from_settings(Settings.from_env({"INNKEEPER_GUARD_HARD": "3", "INNKEEPER_GUARD_SOFT": "2",
                                                              "INNKEEPER_GUARD_PROCESSES": "8"}))
    assert 0 < tiny.soft < tiny.hard


def test_the_guard_settings_are_checked() -> None:
    from innkeeper.errors import ConfigError

    with pytest.raises(ConfigError, match="INNKEEPER_GUARD_HARD"):
        Settings.from_env({"INNKEEPER_GUARD_HARD": "10000"})  # Discord bans at 10,000
    with pytest.raises(ConfigError, match="INNKEEPER_GUARD_SOFT"):
        Settings.from_env({"INNKEEPER_GUARD_HARD": "100", "INNKEEPER_GUARD_SOFT": "100"})
    assert Settings.from_env({"INNKEEPER_GUARD_HARD": "90"}).guard_soft == 50  # 5/9 of hard, as 5000/9000


# --- the hook ------------------------------------------------------------------------------------

class Limiter:
    """A stand-in shared limiter: ``shared`` says whether its guard is in charge."""

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self.acquired: list[dict[str, Any]] = []
        self.updates = 0

    async def acquire(self, route_key: str, major: str = "", **kwargs: Any) -> None:
        self.acquired.append(kwargs)

    def update(self, ticket: object, response: object) -> None:
        self.updates += 1


def _response(status: int, scope: str | None = None) -> SimpleNamespace:
    headers: CIMultiDict[str] = CIMultiDict()
    if scope is not None:
        headers["X-RateLimit-Scope"] = scope

    async def read() -> bytes:
        return b'{"retry_after": 1.0, "global": false}'

    return SimpleNamespace(response=SimpleNamespace(status=status, headers=headers, read=read))


async def _request(hook: RestHook, route: Route, status: int, scope: str | None = None) -> None:
    """One attempt through the hook's trace callbacks, answered with ``status``."""
    token = _ROUTE.set(_RouteInfo(route, None))
    try:
        ctx = SimpleNamespace()
        await hook.on_request_start(None, ctx, None)  # type: ignore[arg-type]
        await hook.on_request_end(None, ctx, _response(status, scope))  # type: ignore[arg-type]
    finally:
        _ROUTE.reset(token)


SEND = Route("POST", "/channels/{channel_id}/messages", channel_id=5)
CALLBACK = Route("POST", INTERACTION_CALLBACK_PATH, webhook_id=1, webhook_token="t")


@pytest.mark.parametrize("limiter", [None, Limiter(shared=False)], ids=["shared limiter off", "redis down"])
async def test_without_a_shared_guard_the_local_one_counts_and_refuses(limiter: Limiter | None) -> None:
    guard = LocalInvalidGuard(soft=2, hard=4, max_delay=0.001)
    hook = RestHook(SimpleNamespace(), limiter, guard)  # type: ignore[arg-type]
    await _request(hook, SEND, 200)
    await _request(hook, SEND, 404)  # 404s do not count toward the ban
    await _request(hook, SEND, 429, scope="shared")  # nor do shared-scope 429s
    assert guard.count() == 0
    await _request(hook, SEND, 403)
    await _request(hook, SEND, 401)
    await _request(hook, SEND, 429, scope="user")
    await _request(hook, SEND, 403)  # delayed (above soft), then sent: four invalid now
    assert guard.count() == 4 and guard.delayed == 1
    with pytest.raises(RequestRefused):
        await _request(hook, SEND, 200)
    # an interaction callback is never refused (the user would see "The application did not respond")
    await _request(hook, CALLBACK, 403)
    assert guard.count() == 5  # ... and its answer still counts
    if limiter is not None:
        assert limiter.acquired and all(not a["guard_exempt"] for a in limiter.acquired[:-1])
        assert limiter.acquired[-1]["guard_exempt"] is True


async def test_with_the_shared_guard_in_charge_the_local_one_only_counts() -> None:
    guard = LocalInvalidGuard(soft=1, hard=2)
    limiter = Limiter(shared=True)
    hook = RestHook(SimpleNamespace(), limiter, guard)  # type: ignore[arg-type]
    for _ in range(5):
        await _request(hook, SEND, 403)
    assert guard.count() == 5 and guard.refused == 0  # the shared guard decides; the history is kept
    limiter.shared = False  # Redis went away: the local guard takes over with what it counted
    with pytest.raises(RequestRefused):
        await _request(hook, SEND, 200)
