"""The event-loop lag probe, and gateway readers that yield the loop in the middle of a backlog."""

from __future__ import annotations

import asyncio
import time

from innkeeper.loop_lag import LAG, LoopLag
from shard.fair_reader import FairReader
from tests.support import wait_for


async def test_the_probe_sees_a_blocked_loop_and_forgets_nothing_it_should_report() -> None:
    lag = LoopLag(interval_s=0.005)
    await lag.start()
    try:
        await wait_for(lambda: len(lag.samples) >= 3, message="a few probes")
        assert lag.worst_since(time.perf_counter()) < 0.05  # an idle loop is hardly late
        before = time.perf_counter()
        time.sleep(0.2)  # noqa: ASYNC251 - the loop is stuck: the pending probe is late right now
        assert lag.current() >= 0.19 and lag.worst_since(before) >= 0.19
        await wait_for(lambda: lag.samples[-1][0] > before, message="the late probe to run")
        late = [at_lag for at, at_lag in lag.samples if at > before]
        assert late[0] >= 0.19 and max(LAG._value.get(), *late) >= 0.19  # noqa: SLF001
        assert lag.worst_since(time.perf_counter() + 1) < 0.05  # nothing after the stall counts it again
    finally:
        await lag.stop()
    assert lag.current() == 0.0


class _BufferedSocket:
    """A gateway connection whose frames are all buffered: ``poll_event`` never suspends."""

    def __init__(self, frames: int, cost_s: float) -> None:
        self.left, self.cost_s = frames, cost_s

    async def poll_event(self) -> None:
        end = time.perf_counter() + self.cost_s
        while time.perf_counter() < end:  # parsing one frame
            pass
        self.left -= 1


async def test_a_reader_draining_a_backlog_gives_the_loop_back_every_slice() -> None:
    ws = _BufferedSocket(frames=400, cost_s=0.0001)  # 40 ms of backlog
    reader = FairReader(slice_s=0.002)
    reader.wrap(ws)
    waits: list[float] = []

    async def ticker() -> None:  # stands for a Redis reply, a REST response, a heartbeat
        while ws.left > 0:
            started = time.perf_counter()
            await asyncio.sleep(0)
            waits.append(time.perf_counter() - started)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker waits for its turn first
    while ws.left > 0:
        await ws.poll_event()
    await tick
    assert reader.yields >= 10  # about every 2 ms of the 40 ms
    assert len(waits) >= 10  # the ticker ran in between, again and again: nothing waited for the whole backlog


async def test_without_slices_the_same_backlog_holds_the_loop() -> None:
    ws = _BufferedSocket(frames=400, cost_s=0.0001)
    waits: list[float] = []

    async def ticker() -> None:
        started = time.perf_counter()
        await asyncio.sleep(0)
        waits.append(time.perf_counter() - started)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    while ws.left > 0:
        await ws.poll_event()
    await tick
    assert waits[0] >= 0.035  # the control: one turn of the loop for the whole 40 ms backlog
