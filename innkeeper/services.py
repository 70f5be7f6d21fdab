"""Background services: one helper for their tasks, and one stack that starts and stops them in order.

A *service* is anything with ``async start()`` and ``async stop()`` (:class:`Service`). Most run
work in the background: a loop every few seconds (heartbeats, the watchdog, reminders, snapshot
saves) or a long-lived listener. :class:`BackgroundTasks` is what each of them holds instead of
hand-written task bookkeeping:

* :meth:`~BackgroundTasks.spawn` starts a task whose crash (any exception but cancellation) is
  logged with the service's name and counted in ``innkeeper_service_failures_total``;
* :meth:`~BackgroundTasks.every` runs ``work`` periodically; a failed run is counted and logged
  (or handed to ``on_error``) and the loop goes on;
* :meth:`~BackgroundTasks.cancel` cancels every task and awaits it, so nothing outlives ``stop()``.

:class:`ServiceStack` is the one place a process starts its services (in order) and stops them
(in reverse order, each failure logged, never stopping the others).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

__all__ = ("Service", "BackgroundTasks", "ServiceStack", "SERVICE_FAILURES")

_log = logging.getLogger(__name__)

SERVICE_FAILURES = Counter("innkeeper_service_failures_total",
                           "Background tasks that crashed, and periodic runs that failed, by service and task",
                           ["service", "task"])

S = TypeVar("S", bound="Service")


class Service(Protocol):
    """A background part of a process."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BackgroundTasks:
    """The background tasks of one service.

    Parameters
    ----------
    service:
        The service's name, for task names, logs and the failure counter.
    """

    __slots__ = ("service", "_tasks", "_stopping")

    def __init__(self, service: str) -> None:
        self.service = service
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def __len__(self) -> int:
        return sum(1 for t in self._tasks if not t.done())

    def spawn(self, coro: Coroutine[Any, Any, object], *, name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background; a crash is logged and counted, never raised."""
        self._stopping = False
        task = asyncio.create_task(self._guard(coro, name), name=f"{self.service}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never awaited ``coro``: close it (a no-op once it ran),
        # so that stopping a service right after a spawn leaves no "never awaited" warning.
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            SERVICE_FAILURES.labels(self.service, name).inc()
            _log.exception("%s: background task %s crashed", self.service, name)

    def every(self, interval_s: float, work: Callable[[], Awaitable[object]], *, name: str,
              run_first: bool = True, wait_first: Callable[[], Awaitable[object]] | None = None,
              wake: asyncio.Event | None = None, debounce_s: float = 0.0,
              on_error: Callable[[Exception], None] | None = None) -> asyncio.Task[None]:
        """Run ``work`` every ``interval_s`` seconds until cancelled.

        Parameters
        ----------
        interval_s:
            Seconds between the end of one run and the start of the next.
        work:
            The periodic work.
        name:
            The task's name.
        run_first:
            Run once at once (True) or wait one interval first.
        wait_first:
            Awaited before the first run (e.g. "until the bot is ready").
        wake:
            When set, the next run starts early (``debounce_s`` after the event), e.g. on a state
            change. The event is cleared before each run.
        debounce_s:
            Quiet time after ``wake`` fires, so a burst of changes makes one run.
        on_error:
            Called with a run's exception instead of logging it with a traceback (e.g. to say once
            that Redis is down). Failed runs are counted either way.
        """
        return self.spawn(self._periodic(interval_s, work, name, run_first, wait_first, wake, debounce_s,
                                         on_error), name=name)

    async def _periodic(self, interval_s: float, work: Callable[[], Awaitable[object]], name: str, run_first: bool,
                        wait_first: Callable[[], Awaitable[object]] | None, wake: asyncio.Event | None,
                        debounce_s: float, on_error: Callable[[Exception], None] | None) -> None:
        if wait_first is not None:
            await wait_first()
        if not run_first:
            await self._pause(interval_s, wake, debounce_s)
        # The flag as well as the cancellation ends the loop: a cancellation can be swallowed on
        # the way (redis-py's asyncio client returns from a command cancelled at the wrong moment).
        while not self._stopping:
            if wake is not None:
                wake.clear()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                SERVICE_FAILURES.labels(self.service, name).inc()
                if on_error is not None:
                    on_error(exc)
                else:
                    _log.exception("%s: %s failed", self.service, name)
            if not self._stopping:
                await self._pause(interval_s, wake, debounce_s)

    @staticmethod
    async def _pause(interval_s: float, wake: asyncio.Event | None, debounce_s: float) -> None:
        if wake is None:
            await asyncio.sleep(interval_s)
            return
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the event's result when a
        # cancellation arrives in the same turn as the wake-up, and the task would never stop.
        try:
            async with asyncio.timeout(interval_s):
                await wake.wait()
        except TimeoutError:
            return
        if debounce_s > 0:
            await asyncio.sleep(debounce_s)

    async def wait(self) -> None:
        """Wait until every task running now has ended (without cancelling it)."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel(self, *, grace_s: float = 1.0) -> None:
        """Cancel every task and wait for it to end (a task may call this on its own service).

        Periodic loops also stop at their next turn. A task that is still running ``grace_s`` after
        its cancellation (it swallowed it) is logged and cancelled again, until it ends: ``stop()``
        must never hang on one.
        """
        self._stopping = True
        current = asyncio.current_task()
        pending = {t for t in self._tasks if t is not current and not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=grace_s)
            for task in pending:
                _log.error("%s: task %s ignored its cancellation; cancelling it again", self.service, task.get_name())
        self._tasks.difference_update({t for t in self._tasks if t.done()})


class ServiceStack:
    """Starts services in order and stops the started ones in reverse order.

    Parameters
    ----------
    services:
        The services, in start order.
    """

    __slots__ = ("_services", "_started")

    def __init__(self, services: Iterable[Service] = ()) -> None:
        self._services: list[Service] = list(services)
        self._started: list[Service] = []

    def add(self, service: S) -> S:
        """Append ``service`` (started after those added before it); returns it."""
        self._services.append(service)
        return service

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(self._services)

    @property
    def started(self) -> bool:
        return bool(self._started)

    async def start(self) -> None:
        """Start every service in order; when one fails, stop those already started and re-raise."""
        for service in self._services:
            if service in self._started:
                continue
            try:
                await service.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(service)

    async def stop(self) -> None:
        """Stop the started services in reverse order; a failure is logged and the rest still stop."""
        while self._started:
            service = self._started.pop()
            _log.debug("stopping %s", type(service).__name__)
            try:
                await service.stop()
            except Exception:
                _log.exception("service %s failed to stop", type(service).__name__)
