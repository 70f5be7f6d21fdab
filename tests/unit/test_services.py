"""The background-service toolkit: start order, stop in reverse, crashes counted, stop that never hangs."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from innkeeper.services import BackgroundTasks, ServiceStack


def _failures(service: str, task: str) -> float:
    return REGISTRY.get_sample_value("innkeeper_service_failures_total", {"service": service, "task": task}) or 0.0


class Recorder:
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False, fail_stop: bool = False) -> None:
        self.name, self.log, self.fail_start, self.fail_stop = name, log, fail_start, fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


async def test_services_start_in_order_and_stop_in_reverse_even_when_one_fails_to_stop() -> None:
    log: list[str] = []
    stack = ServiceStack([Recorder("a", log), Recorder("b", log, fail_stop=True)])
    stack.add(Recorder("c", log))
    await stack.start()
    await stack.start()  # idempotent
    await stack.stop()
    await stack.stop()
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_a_failed_start_stops_what_already_started() -> None:
    log: list[str] = []
    stack = ServiceStack([Recorder("a", log), Recorder("b", log, fail_start=True), Recorder("c", log)])
    with pytest.raises(RuntimeError, match="b cannot start"):
        await stack.start()
    assert log == ["start a", "stop a"] and not stack.started


async def test_a_crash_is_logged_and_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks("svc-crash")
    before = _failures("svc-crash", "boom")

    async def boom() -> None:
        raise ValueError("bad")

    await asyncio.wait_for(tasks.spawn(boom(), name="boom"), 5)
    assert _failures("svc-crash", "boom") == before + 1
    assert "svc-crash: background task boom crashed" in caplog.text


async def test_periodic_work_survives_failures_and_reports_them() -> None:
    tasks = BackgroundTasks("svc-every")
    runs: list[int] = []
    errors: list[str] = []
    done = asyncio.Event()

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) == 2:
            raise RuntimeError("second run fails")
        if len(runs) == 4:
            done.set()

    tasks.every(0.001, work, name="tick", on_error=lambda exc: errors.append(str(exc)))
    await asyncio.wait_for(done.wait(), 5)
    await tasks.cancel()
    assert errors == ["second run fails"] and len(runs) >= 4 and len(tasks) == 0


async def _wake_then_stop() -> None:
    tasks = BackgroundTasks("svc-wake")
    wake = asyncio.Event()
    runs = 0
    ran = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        ran.set()

    tasks.every(3600, work, name="write", wake=wake)
    await asyncio.wait_for(ran.wait(), 5)
    ran.clear()
    wake.set()  # woken long before its hour is up
    await asyncio.wait_for(ran.wait(), 5)
    assert runs == 2
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(tasks.cancel(), 5)
    assert len(tasks) == 0


async def test_wake_runs_the_work_early_and_stop_races_no_wake_up() -> None:
    """A wake-up and a cancellation in the same turn: stop still ends the task (3.11's wait_for would not)."""
    for _ in range(50):
        await _wake_then_stop()


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks("svc-stubborn")
    refusals = 0

    async def stubborn() -> None:
        nonlocal refusals
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                refusals += 1
                if refusals >= 2:
                    raise

    task = tasks.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.cancel(grace_s=0.01), 5)
    assert task.done() and refusals == 2
    assert "ignored its cancellation" in caplog.text


async def test_a_periodic_loop_whose_work_swallows_the_cancellation_still_ends() -> None:
    """redis-py's asyncio client can return from a command cancelled at the wrong moment."""
    tasks = BackgroundTasks("svc-swallow")
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return  # swallowed, as a client library might

    tasks.every(3600, work, name="write")
    await asyncio.wait_for(started.wait(), 5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(tasks.cancel(grace_s=30), 5)  # ends at its next turn, not after the grace
    assert len(tasks) == 0 and loop.time() - began < 5
