"""The *admission* stage: at most so many commands run at once in a cluster, a bounded queue waits.

Past capacity a cluster that takes every command at once slows every command down for everyone,
and slash commands start to miss Discord's 3 seconds ("The application did not respond").
:class:`Admission` bounds the work instead:

* **running**: at most ``max_running`` commands are past admission at once (the later stages:
  configuration, permission, throttle, the body and its answer);
* **queued**: more wait behind them, first come first served; a command that finishes hands its
  place straight to the oldest waiting one (no newcomer overtakes the queue). A newcomer joins the
  queue only if it would get a place within ``max_queue_delay`` seconds, judged from how long
  commands have been holding their places (and never past ``max_queued``): a queue that cannot be
  served in time only turns every command late, and the work it would cost comes when the cluster
  has none to spare;
* **deferred**: a slash command still waiting once its interaction is ``defer_after`` seconds old
  is deferred while it waits (Discord then shows "thinking…" and accepts the answer for 15
  minutes), so the 3-second rule holds however long the queue; prefix commands have no such rule;
* **shed**: a command that would wait too long, or finds the queue full, or waits longer than
  ``max_wait``, is not run: the user is told at once, kindly and privately, that the bot is busy
  (``E5008``, outcome ``shed``). A shed command is the bot's choice, not the user's fault: it does
  not count against the user's refusal throttle. Telling costs a request, so while every place and
  the queue are taken (:attr:`Admission.saturated`) slash commands are shed before discord.py
  parses them (:mod:`shard.early_shed`): the answer then costs one request and nothing else.

The settings are ``INNKEEPER_COMMANDS_MAX_RUNNING``, ``INNKEEPER_COMMANDS_MAX_QUEUED``,
``INNKEEPER_COMMANDS_MAX_QUEUE_DELAY``, ``INNKEEPER_COMMANDS_DEFER_AFTER`` and
``INNKEEPER_COMMANDS_MAX_WAIT``. Metrics:
``innkeeper_commands_running``, ``innkeeper_commands_queued`` (gauges),
``innkeeper_commands_deferred_total``, ``innkeeper_commands_shed_total{reason}`` and
``innkeeper_command_queue_seconds`` (the wait of every admitted command); the cluster's heartbeat
carries them to ``innkeeper status`` and the status service (:meth:`Admission.snapshot`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from innkeeper.errors import CommandError, ErrorCode
from ipc.heartbeat import CommandLoad

__all__ = ("Admission", "SHED_MESSAGE", "RUNNING", "QUEUED", "DEFERRED", "SHED", "QUEUE_SECONDS")

_log = logging.getLogger(__name__)

#: What a user whose command was shed reads (then the code).
SHED_MESSAGE = "I'm very busy right now and couldn't get to your command — please try again in a few seconds."

RUNNING = Gauge("innkeeper_commands_running", "Commands past admission and not finished yet")
QUEUED = Gauge("innkeeper_commands_queued", "Commands waiting for admission")
DEFERRED = Counter("innkeeper_commands_deferred_total",
                   "Slash commands deferred while they waited for admission (so Discord's 3 s hold)")
SHED = Counter("innkeeper_commands_shed_total", "Commands refused because the cluster was at capacity, by reason",
               ["reason"])
QUEUE_SECONDS = Histogram("innkeeper_command_queue_seconds", "Time admitted commands waited for admission",
                          buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

_SHED_FULL = SHED.labels("queue_full")
_SHED_SLOW = SHED.labels("queue_too_slow")
_SHED_EARLY = SHED.labels("early")
_SHED_WAIT = SHED.labels("waited_too_long")

#: Weight of the newest command in the smoothed time a command holds its place.
_DURATION_WEIGHT = 0.05


class Admission:
    """Bounded concurrency with a bounded FIFO queue (see the module docstring).

    Parameters
    ----------
    max_running:
        Commands past admission at once, at most.
    max_queued:
        Commands waiting, at most; 0 sheds whatever finds every place taken.
    max_queue_delay:
        A newcomer is shed at once when the queue ahead of it would keep it waiting longer than
        this: (waiting + 1) × the smoothed time a command holds its place ÷ ``max_running``.
    defer_after:
        Age in seconds of a waiting slash command's interaction at which it is deferred.
    max_wait:
        Seconds a command may wait before it is shed.
    clock:
        Monotonic seconds (tests pass a fake).
    """

    __slots__ = ("max_running", "max_queued", "max_queue_delay", "defer_after", "max_wait", "_clock", "_running",
                 "_queued", "_waiters", "deferred", "shed", "_observe", "_held")

    def __init__(self, *, max_running: int = 64, max_queued: int = 512, max_queue_delay: float = 1.0,
                 defer_after: float = 1.5, max_wait: float = 10.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        if max_running < 1 or max_queued < 0 or max_queue_delay <= 0 or not 0 < defer_after < 3 or max_wait <= 0:
            raise ValueError("Admission needs max_running >= 1, max_queued >= 0, max_queue_delay > 0, "
                             "0 < defer_after < 3 and max_wait > 0")
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_queue_delay = max_queue_delay
        self.defer_after = defer_after
        self.max_wait = max_wait
        self._clock = clock
        self._running = 0
        self._queued = 0
        #: waiting commands, oldest first; a done future was given a place (or gave up)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        #: Since the process started: slash commands deferred while waiting, commands shed.
        self.deferred = 0
        self.shed = 0
        self._observe = QUEUE_SECONDS.observe
        #: seconds a command holds its place (smoothed), None until one finished
        self._held: float | None = None

    @property
    def running(self) -> int:
        """Commands past admission now."""
        return self._running

    @property
    def queued(self) -> int:
        """Commands waiting now."""
        return self._queued

    @property
    def saturated(self) -> bool:
        """Whether a command arriving now would be shed at once (every place taken, the queue too)."""
        return self._running >= self.max_running and self._queue_refuses()

    def _queue_refuses(self) -> bool:
        if self._queued >= self.max_queued:
            return True
        held = self._held
        return held is not None and (self._queued + 1) * held > self.max_running * self.max_queue_delay

    def expected_wait(self) -> float | None:
        """Seconds a command arriving now would wait for a place (None: nothing measured yet)."""
        if self._running < self.max_running:
            return 0.0
        return None if self._held is None else (self._queued + 1) * self._held / self.max_running

    def shed_early(self) -> None:
        """Count a command shed before discord.py parsed it (:mod:`shard.early_shed`)."""
        self.shed += 1
        _SHED_EARLY.inc()

    def snapshot(self) -> CommandLoad:
        """Running, queued, deferred and shed, for the heartbeat and ``/health``."""
        return {"running": self._running, "queued": self.queued, "max_running": self.max_running,
                "max_queued": self.max_queued, "deferred": self.deferred, "shed": self.shed}

    async def enter(self, *, age: float = 0.0, defer: Callable[[], Awaitable[Any]] | None = None) -> float:
        """Wait for a place; returns when it was given (monotonic seconds). Call :meth:`leave` with it once
        the command is done, whatever happened.

        Parameters
        ----------
        age:
            Seconds the command is old already (a slash command: since its interaction was created).
        defer:
            Defers the command's interaction; called once if it is still waiting at ``defer_after``
            seconds of age. None for a prefix command.

        Raises
        ------
        CommandError
            ``COMMAND_SHED``: the queue is full, or the wait passed ``max_wait``.
        """
        if self._running < self.max_running:  # a free place means nobody waits: leave() hands places over
            self._running += 1
            RUNNING.inc()
            self._observe(0.0)
            return self._clock()
        if self._queued >= self.max_queued:
            self._shed(_SHED_FULL)
        if self._queue_refuses():
            self._shed(_SHED_SLOW)
        started = self._clock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._queued += 1
        QUEUED.inc()
        try:
            if defer is not None:
                await asyncio.wait((future,), timeout=max(0.0, self.defer_after - age))
                if not future.done():
                    self.deferred += 1
                    DEFERRED.inc()
                    try:
                        await defer()
                    except Exception as exc:  # the answer may still make it as a follow-up; keep waiting
                        _log.warning("deferring a waiting command failed: %s", exc)
            waited = self._clock() - started
            if not future.done():
                await asyncio.wait((future,), timeout=max(0.0, self.max_wait - waited))
            if not future.done():
                future.cancel()
                self._shed(_SHED_WAIT)
        except BaseException:
            if future.done() and not future.cancelled():
                self.leave()  # given a place while leaving (cancelled): pass it on
            else:
                future.cancel()
            raise
        finally:
            self._queued -= 1
            QUEUED.dec()
            self._prune()
        admitted = self._clock()
        self._observe(admitted - started)
        return admitted

    def leave(self, admitted: float | None = None) -> None:
        """A command past admission is done (``admitted``: what :meth:`enter` returned, to learn how long
        commands hold their places): its place goes to the oldest waiting command, if any."""
        if admitted is not None:
            held = max(0.0, self._clock() - admitted)
            self._held = held if self._held is None else self._held + _DURATION_WEIGHT * (held - self._held)
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)  # the place changes hands; ``running`` stays the same
                return
        self._running -= 1
        RUNNING.dec()

    def _prune(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0].done():
            waiters.popleft()

    def _shed(self, counter: Any) -> None:
        self.shed += 1
        counter.inc()
        raise CommandError(SHED_MESSAGE, code=ErrorCode.COMMAND_SHED)
