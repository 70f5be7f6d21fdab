"""Shard-side runtime pieces with a fake bot: tracker, watchdog, identify gate (no network)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from ipc.identify import IdentifyBudgetExhausted, IdentifyTicket
from ipc.keys import Keys
from shard.identify import IdentifyGate
from shard.tracker import ShardTracker
from shard.watchdog import BLIND, ClusterUnrecoverable, Watchdog
from tests.support import wait_for


class FakeWS:
    def __init__(self) -> None:
        self._keep_alive = SimpleNamespace(_last_recv=time.perf_counter())
        self.session_id: str | None = "sess"
        self.sequence = 5
        self.gateway = "ws://x/gateway"
        self.closed_with: list[int] = []
        self.open = True

    async def close(self, code: int = 1000) -> None:
        self.closed_with.append(code)


class FakeShard:
    def __init__(self, ws: FakeWS) -> None:
        self._parent = SimpleNamespace(ws=ws)
        self.latency = 0.012
        self.reconnects = 0

    def is_closed(self) -> bool:
        return not self._parent.ws.open

    async def reconnect(self) -> None:
        self.reconnects += 1


class FakeBot:
    def __init__(self, shard_ids: list[int]) -> None:
        self.ws = {sid: FakeWS() for sid in shard_ids}
        self.shard_infos = {sid: FakeShard(ws) for sid, ws in self.ws.items()}
        self.guilds = [SimpleNamespace(shard_id=sid) for sid in shard_ids for _ in range(sid + 1)]
        self.listeners: dict[str, Any] = {}
        self._connection = SimpleNamespace(parsers={"MESSAGE_CREATE": lambda d: None, "READY": lambda d: None})
        self.closed = False
        self.fatal_error: BaseException | None = None

    def get_shard(self, sid: int) -> FakeShard | None:
        return self.shard_infos.get(sid)

    def add_listener(self, func: Any, name: str) -> None:
        self.listeners[name] = func

    def remove_listener(self, func: Any, name: str) -> None:
        self.listeners.pop(name, None)

    async def close(self) -> None:
        self.closed = True

    async def give_up(self, error: BaseException) -> None:
        self.fatal_error = error
        await self.close()


def _tracker(bot: FakeBot) -> ShardTracker:
    tracker = ShardTracker(list(bot.ws))
    tracker.attach(bot)  # type: ignore[arg-type]
    return tracker


def _gate(bot: FakeBot) -> IdentifyGate:
    redis = SimpleNamespace(register_script=lambda _s: None)
    return IdentifyGate(redis, Keys("test"), _tracker(bot), max_concurrency=2,  # type: ignore[arg-type]
                        window_s=5.0, margin_s=0.0)


async def test_tracker_states_counts_and_beats() -> None:
    bot = FakeBot([2, 3])
    t = _tracker(bot)
    assert t.cluster_state() == "STARTING"
    bot._connection.parsers["MESSAGE_CREATE"]({})
    bot._connection.parsers["MESSAGE_CREATE"]({})
    bot._connection.parsers["READY"]({})
    assert t.events_by_type == {"MESSAGE_CREATE": 2, "READY": 1} and t.total_events == 3
    t.note_identifying(2)
    t.note_identified(2, 0.5)
    await bot.listeners["on_shard_connect"](2)
    assert t.cluster_state() == "STARTING"
    await bot.listeners["on_shard_connect"](3)
    assert t.cluster_state() == "READY" and t.changed.is_set()
    await bot.listeners["on_shard_disconnect"](3)  # it has a session: discord.py will RESUME
    assert t.shards[3].state == "RESUMING" and t.cluster_state() == "DEGRADED"
    bot.ws[3].session_id = None
    await bot.listeners["on_shard_disconnect"](3)
    assert t.shards[3].state == "DISCONNECTED" and t.shards[3].reconnects == 2
    await bot.listeners["on_shard_resumed"](3)
    assert t.shards[3].state == "READY" and t.shards[3].resumes == 1
    t.set_blocked("identify budget exhausted")
    assert t.cluster_state() == "BLOCKED"
    beats = {b["id"]: b for b in t.shard_beats()}
    assert beats[2]["guilds"] == 3 and beats[3]["guilds"] == 4
    assert beats[2]["identifies"] == 1 and beats[2]["latency_ms"] == 12.0
    assert beats[2]["last_event_age_s"] is not None and beats[2]["last_event_age_s"] < 5
    await t.stop()
    assert bot.listeners == {} and t.cluster_state() == "STOPPING"


async def test_watchdog_closes_a_zombie_then_reconnects_it() -> None:
    bot = FakeBot([0, 1])
    t = _tracker(bot)
    for sid in (0, 1):
        t.set_state(sid, "READY")
    dog = Watchdog(bot, t, give_up=bot.give_up, zombie_after_s=10)  # type: ignore[arg-type]
    await dog.check()
    assert bot.ws[0].closed_with == [] and dog.zombies_closed == 0
    bot.ws[0]._keep_alive._last_recv -= 11  # shard 0 went silent
    await dog.check()
    assert bot.ws[0].closed_with == [4000] and bot.ws[1].closed_with == []
    await dog.check()  # still silent, but not yet for another zombie_after
    assert bot.shard_infos[0].reconnects == 0
    dog.kicked[0] -= 10
    await dog.check()
    assert bot.shard_infos[0].reconnects == 1 and dog.zombies_reconnected == 1
    bot.ws[0]._keep_alive._last_recv = time.perf_counter()  # alive again
    await dog.check()
    assert 0 not in dog.kicked


async def test_watchdog_says_so_when_it_cannot_read_discord_pys_receive_time() -> None:
    bot = FakeBot([0, 1])
    t = _tracker(bot)
    for sid in (0, 1):
        t.set_state(sid, "READY")
    dog = Watchdog(bot, t, give_up=bot.give_up, zombie_after_s=10)  # type: ignore[arg-type]
    await dog.check()
    assert not dog.blind and BLIND._value.get() == 0
    bot.ws[1]._keep_alive = SimpleNamespace(renamed_last_recv=time.perf_counter())  # a release moved the field
    await dog.check()
    assert dog.blind and BLIND._value.get() == 1
    bot.ws[1]._keep_alive = SimpleNamespace(_last_recv=time.perf_counter())
    await dog.check()
    assert not dog.blind and BLIND._value.get() == 0


async def test_watchdog_leaves_waiting_shards_alone() -> None:
    bot = FakeBot([0])
    t = _tracker(bot)
    t.note_identifying(0)  # waiting in the identify queue for a long time is normal
    bot.ws[0]._keep_alive._last_recv -= 1000
    dog = Watchdog(bot, t, give_up=bot.give_up, zombie_after_s=10,  # type: ignore[arg-type]
                   unrecoverable_after_s=1)
    await dog.check()
    dog.down_since = (dog.down_since or time.monotonic()) - 5
    await dog.check()
    assert bot.ws[0].closed_with == [] and not bot.closed


async def test_watchdog_gives_up_on_a_dead_cluster_but_not_a_blocked_one() -> None:
    bot = FakeBot([0, 1])
    t = _tracker(bot)
    for sid in (0, 1):
        t.set_state(sid, "DISCONNECTED")
        bot.ws[sid].open = False
    dog = Watchdog(bot, t, give_up=bot.give_up, zombie_after_s=10,  # type: ignore[arg-type]
                   unrecoverable_after_s=30)
    await dog.check()
    assert dog.down_since is not None
    t.set_blocked("identify budget exhausted")
    await dog.check()
    assert dog.down_since is None  # held back on purpose: not a failure
    t.set_blocked(None)
    await dog.check()
    dog.down_since -= 31  # type: ignore[operator]
    await dog.check()
    assert dog._closing is not None
    await dog._closing
    assert bot.closed and isinstance(bot.fatal_error, ClusterUnrecoverable)
    assert bot.fatal_error.code.value == "E6002"


class FakeQueue:
    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = outcomes
        self.calls = 0
        self.confirmed: list[int] = []

    async def acquire(self, shard_id: int) -> IdentifyTicket:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return IdentifyTicket(shard_id, shard_id % 2, 0.25, 900)

    async def confirm(self, ticket: IdentifyTicket) -> None:
        self.confirmed.append(ticket.shard_id)


def _waited_s() -> float:
    return REGISTRY.get_sample_value("innkeeper_identify_wait_seconds_sum") or 0.0


async def test_identify_hook_waits_out_an_exhausted_budget_and_redis_outages() -> None:
    bot = FakeBot([4, 5])
    gate = _gate(bot)
    slept: list[float] = []
    states: list[str | None] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        states.append(gate.tracker.blocked_reason)

    gate._sleep = fake_sleep
    gate._budget_checked = time.monotonic()  # no refresh from Discord in this test
    queue = FakeQueue([IdentifyBudgetExhausted(5, 3, 10, 42.0), RedisConnectionError("down"), None])
    gate.queue = queue  # type: ignore[assignment]
    waited_before = _waited_s()
    await gate.before_identify(5)
    assert queue.calls == 3
    assert slept[0] == 42.0 and states[0] is not None and "identify budget exhausted" in states[0]
    assert 0.05 <= slept[1] <= 0.1  # the first backoff step
    assert gate.tracker.blocked_reason is None  # cleared once identifying works again
    rec = gate.tracker.shards[5]
    assert rec.state == "IDENTIFYING" and rec.identifies == 1
    # The window starts from the READY that acknowledges the IDENTIFY, not from the grant.
    await gate.settle()
    assert queue.confirmed == []
    bot._connection.parsers["READY"]({"shard": [4, 8]})  # another shard's READY: not this ticket
    bot._connection.parsers["READY"]({"shard": [5, 8]})
    await gate.settle()
    assert queue.confirmed == [5]
    bot._connection.parsers["READY"]({"shard": [5, 8]})  # a READY after a RESUME-less reconnect: no ticket
    await gate.settle()
    assert queue.confirmed == [5]
    assert _waited_s() - waited_before == 0.25


class SlowQueue(FakeQueue):
    """Grants after ``delay`` seconds: a shard far back in the identify queue."""

    def __init__(self, delay: float) -> None:
        super().__init__([None])
        self.delay = delay

    async def acquire(self, shard_id: int) -> IdentifyTicket:
        await asyncio.sleep(self.delay)
        return await super().acquire(shard_id)


async def test_time_in_the_identify_queue_does_not_count_against_the_connect_timeout() -> None:
    bot = FakeBot([3])
    timeout = 0.05
    gate = _gate(bot)
    gate.queue = SlowQueue(0.3)  # type: ignore[assignment]

    async def connect() -> float:
        async with gate.connect_deadline(3, timeout):
            await gate.before_identify(3, connect_timeout=timeout)  # 0.3 s in the queue, 6 x the timeout
            await asyncio.Event().wait()  # … but the connect timeout runs again once the queue grants
        raise AssertionError("the connect timeout did not resume")

    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await connect()
    assert asyncio.get_running_loop().time() - started >= 0.3


def test_lanes_group_shards_by_identify_bucket() -> None:
    from shard.launch import lanes

    assert lanes([16, 17, 18, 19, 20, 21], 4) == [[16, 20], [17, 21], [18], [19]]
    assert lanes([5, 3, 4], 1) == [[3, 4, 5]]
    assert lanes(list(range(32, 48)), 16) == [[sid] for sid in range(32, 48)]


class SwallowingRedis:
    """Like redis-py 8's asyncio client: a command cancelled while in flight returns normally.

    The first ``answered`` writes complete; the next one hangs until it is cancelled, and swallows
    that cancel; later ones complete (so a loop that missed the cancel keeps writing).
    """

    def __init__(self, answered: int) -> None:
        self.answered = answered
        self.writes = 0
        self.deleted: list[str] = []

    async def set(self, key: str, value: bytes, px: int) -> None:
        self.writes += 1
        if self.writes == self.answered + 1:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    async def delete(self, key: str) -> None:
        self.deleted.append(key)


async def test_heartbeat_stop_returns_when_a_write_swallows_the_cancel() -> None:
    from shard.heartbeat_writer import Heartbeat

    bot = FakeBot([0, 1])
    redis = SwallowingRedis(answered=3)
    keys = Keys("test")
    beat = Heartbeat(redis, keys, _tracker(bot), cluster_id=0, interval_s=0.01, ttl_s=1.0)  # type: ignore[arg-type]
    await beat.start()
    await wait_for(lambda: redis.writes > redis.answered, message="a write in flight")
    stopping = asyncio.create_task(beat.stop())  # the cancel lands in the write, which swallows it
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done, "stop() waits forever for a loop that missed its cancel"
    assert redis.writes == redis.answered + 1  # no write after stop …
    assert redis.deleted == [keys.heartbeat(0)]  # … and the record is gone
