"""Circuit breakers: one per outside dependency, so that a dependency that is down costs nothing.

Without a breaker every call to a dependency that is down waits out its own connection attempts,
retries and timeout, and every command that touches it takes seconds to fail. A :class:`Breaker`
watches the outcomes of the calls to one dependency and, once it has seen ``threshold`` failures
in a row, *opens*: calls are refused at once (their callers answer "X is down" in microseconds)
for ``open_for`` seconds. Then it lets ``probes`` calls through (*half-open*); a probe that succeeds
closes the breaker, one that fails opens it again for twice as long (up to ``max_open_for``).

The dependencies of a cluster process (:data:`DEPENDENCIES`) and who feeds their breakers:

==============  =====================================================================================
``postgres``    the query funnel (``db/pool.py``): connection failures and queries cut off after
                running longer than ``slow_call_s``; any answer of the server is a success
``redis``       every connection of the process's Redis client (``ipc/redis_breaker.py``): failed
                connects and dropped connections; every reply is a success
``discord_rest``  the REST hook (``shard/rest_hook.py``): 5xx answers and failed connections;
                interaction callbacks and follow-ups are never refused (a user's answer goes
                through them), but their outcomes count
``http``        any other outgoing HTTP of the process's session (CDN downloads), same hook
==============  =====================================================================================

Arrival order
-------------
Calls overlap, so an outcome can arrive after the breaker changed state because of others: a slow
success of a call admitted before the breaker opened must not close it, and a failure admitted
before it closed again must not count toward opening it anew. Each admitted call carries a
:class:`Permit` stamped with the breaker's *generation*, which every state change increments; an
outcome whose generation is not the current one is stale and changes nothing. A probe that never
reports back (its caller was cancelled and released it, or lost it) frees its slot after
``open_for`` seconds, so a breaker never stays half-open for good.

State is kept per process; nothing here is shared through Redis (a breaker protecting Redis could
not). :class:`Breakers` holds a process's breakers, answers the command pipeline's one question
(:meth:`Breakers.check`: are this command's dependencies up?) and describes them for ``/health``,
the heartbeat and the status service. The states are exported as
``innkeeper_breaker_state{dependency}`` (0 closed, 1 half-open, 2 open),
``innkeeper_breaker_transitions_total{dependency,state}`` and
``innkeeper_breaker_rejections_total{dependency}``.
"""

from __future__ import annotations

import enum
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily

from .errors import ErrorCode, InnkeeperError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .settings import Settings

__all__ = ("BreakerState", "Breaker", "Breakers", "Permit", "DependencyDown", "DEPENDENCIES", "describe_dependency")

_log = logging.getLogger(__name__)

#: Every dependency a cluster process has a breaker for, with what users are told is down.
DEPENDENCIES: Mapping[str, str] = {
    "postgres": "the database",
    "redis": "the shared cache (Redis)",
    "discord_rest": "Discord's API",
    "http": "an outside web service",
}


def describe_dependency(name: str) -> str:
    """What a user is told is down (``"the database"``); the name itself for an unknown one."""
    return DEPENDENCIES.get(name, name)


class BreakerState(enum.IntEnum):
    """A breaker's state; the value is what ``innkeeper_breaker_state`` exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


TRANSITIONS = Counter("innkeeper_breaker_transitions_total", "Circuit breaker state changes, by the state entered",
                      ["dependency", "state"])
REJECTIONS = Counter("innkeeper_breaker_rejections_total", "Calls a circuit breaker refused at once",
                     ["dependency"])


class DependencyDown(InnkeeperError):
    """A dependency's breaker is open: the call was refused at once, without trying.

    Users see which dependency is down and when to try again (``E6003``); it is an outage, not a
    bug, so it is logged without a traceback.
    """

    default_code = ErrorCode.DEPENDENCY_DOWN

    def __init__(self, dependency: str, retry_after: float, *, message: str | None = None) -> None:
        what = describe_dependency(dependency)
        wait = max(1, math.ceil(retry_after))
        super().__init__(
            message or f"{dependency} is down (circuit breaker open); calls resume in {retry_after:.1f}s",
            user_message=f"{what[0].upper()}{what[1:]} is unreachable right now, so this can't be done; commands "
                         f"that don't need it still work. Try again in about {wait} s.",
            dependency=dependency, retry_after=retry_after,
        )
        self.dependency = dependency
        self.retry_after = retry_after


class Permit:
    """One admitted call: hand it back with :meth:`Breaker.success`, :meth:`~Breaker.failure` or
    :meth:`~Breaker.release`."""

    __slots__ = ("generation", "probe", "started")

    def __init__(self, generation: int, probe: bool, started: float) -> None:
        self.generation = generation
        self.probe = probe
        self.started = started

    def __repr__(self) -> str:
        return f"Permit(generation={self.generation}, probe={self.probe})"


class Breaker:
    """The breaker of one dependency (see the module docstring).

    Parameters
    ----------
    name:
        The dependency (``"postgres"``); labels the metrics and names it to users.
    threshold:
        Failures in a row (in one generation) that open the breaker.
    open_for:
        Seconds the breaker stays open the first time; doubled after each failed probe.
    max_open_for:
        The longest it stays open.
    probes:
        Calls let through at once while half-open.
    clock:
        Monotonic seconds (tests pass a fake).

    Raises
    ------
    ValueError
        Unless ``threshold >= 1``, ``0 < open_for <= max_open_for`` and ``probes >= 1``.
    """

    __slots__ = ("name", "threshold", "open_for", "max_open_for", "probes", "_clock", "_state", "generation",
                 "_failures", "_opened_at", "_open_span", "_reopens", "_probing", "opened", "rejected",
                 "__weakref__")

    def __init__(self, name: str, *, threshold: int = 5, open_for: float = 5.0, max_open_for: float = 60.0,
                 probes: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1 or not 0 < open_for <= max_open_for or probes < 1:
            raise ValueError("a breaker needs threshold >= 1, 0 < open_for <= max_open_for and probes >= 1")
        self.name = name
        self.threshold = threshold
        self.open_for = open_for
        self.max_open_for = max_open_for
        self.probes = probes
        self._clock = clock
        self._state = BreakerState.CLOSED
        #: Incremented by every state change; outcomes of older permits are stale.
        self.generation = 0
        self._failures = 0
        self._opened_at = 0.0
        self._open_span = open_for
        self._reopens = 0
        #: Probe permits out while half-open: their start times.
        self._probing: list[float] = []
        #: Times the breaker opened, and calls it refused, since start (also in the metrics).
        self.opened = 0
        self.rejected = 0
        _LIVE.add(self)

    # --- state ----------------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose time is up reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._open_span:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until the breaker lets a call through again (0.0 when it would now)."""
        state = self.state
        if state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._open_span - self._clock())
        if state is BreakerState.HALF_OPEN and not self._probe_free(self._clock()):
            return max(0.0, min(self._probing) + self._open_span - self._clock())
        return 0.0

    def refuses(self) -> bool:
        """True when a call now would be refused (without taking a probe slot)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        return state is BreakerState.OPEN or not self._probe_free(self._clock())

    def _probe_free(self, now: float) -> bool:
        self._probing = [t for t in self._probing if now - t < self._open_span]  # lost probes expire
        return len(self._probing) < self.probes

    def _move(self, state: BreakerState) -> None:
        previous = self._state
        self._state = state
        self.generation += 1
        self._failures = 0
        self._probing.clear()
        TRANSITIONS.labels(self.name, state.label).inc()
        if state is BreakerState.OPEN:
            self.opened += 1
            self._opened_at = self._clock()
            self._open_span = min(self.max_open_for, self.open_for * 2 ** min(self._reopens, 30))
            _log.warning("%s: circuit breaker open for %.1f s (%s)", self.name, self._open_span,
                         "the probe failed" if previous is BreakerState.HALF_OPEN else
                         f"{self.threshold} failures in a row")
        elif state is BreakerState.CLOSED:
            self._reopens = 0
            _log.warning("%s: circuit breaker closed; the dependency answers again", self.name)
        else:
            _log.info("%s: circuit breaker half-open; probing", self.name)

    # --- calls ----------------------------------------------------------------------------------
    def enter(self) -> Permit | None:
        """Admit one call, or None when the breaker refuses it (counted in the rejections)."""
        state = self.state
        now = self._clock()
        if state is BreakerState.CLOSED:
            return Permit(self.generation, False, now)
        if state is BreakerState.HALF_OPEN and self._probe_free(now):
            self._probing.append(now)
            return Permit(self.generation, True, now)
        self.rejected += 1
        REJECTIONS.labels(self.name).inc()
        return None

    def success(self, permit: Permit) -> None:
        """The call got an answer from the dependency."""
        if permit.generation != self.generation:
            return  # stale: the state changed since this call was admitted
        if self._state is BreakerState.HALF_OPEN and permit.probe:
            self._move(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._failures = 0

    def failure(self, permit: Permit) -> None:
        """The call failed because of the dependency (unreachable, 5xx, cut off while too slow)."""
        if permit.generation != self.generation:
            return
        if self._state is BreakerState.HALF_OPEN and permit.probe:
            self._reopens += 1
            self._move(BreakerState.OPEN)
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.threshold:
                self._move(BreakerState.OPEN)

    def observe(self, ok: bool) -> None:
        """The outcome of a call made without a permit (on a connection opened under an earlier one).

        Counts only while closed: a success there resets the run of failures, a failure adds to it.
        Open or half-open, only permits decide (a probe closes the breaker, nothing else does).
        """
        if self._state is not BreakerState.CLOSED:
            return
        if ok:
            self._failures = 0
        else:
            self._failures += 1
            if self._failures >= self.threshold:
                self._move(BreakerState.OPEN)

    def release(self, permit: Permit) -> None:
        """The call ended without telling anything about the dependency (cancelled early): free its slot."""
        if permit.generation == self.generation and permit.probe and permit.started in self._probing:
            self._probing.remove(permit.started)

    def age(self, permit: Permit) -> float:
        """Seconds since ``permit`` was handed out."""
        return self._clock() - permit.started

    def describe(self) -> dict[str, Any]:
        """``{"state", "retry_after_s", "opened"}`` for ``/health``, heartbeats and the status service."""
        state = self.state
        return {"state": state.label, "retry_after_s": round(self.retry_after(), 1), "opened": self.opened}

    def __repr__(self) -> str:
        return f"Breaker({self.name!r}, {self.state.label})"


class Breakers:
    """A process's breakers, one per dependency of :data:`DEPENDENCIES` (see the module docstring).

    Parameters
    ----------
    names:
        The dependencies (all of :data:`DEPENDENCIES` by default).
    options:
        Passed to every :class:`Breaker` (``threshold``, ``open_for``, ``max_open_for``, ``clock``).
    """

    __slots__ = ("_breakers",)

    def __init__(self, names: Iterable[str] = DEPENDENCIES, **options: Any) -> None:
        self._breakers = {name: Breaker(name, **options) for name in names}

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Breakers:
        """Breakers with ``INNKEEPER_BREAKER_THRESHOLD``, ``_OPEN`` and ``_MAX_OPEN``."""
        options.setdefault("threshold", settings.breaker_threshold)
        options.setdefault("open_for", settings.breaker_open_s)
        options.setdefault("max_open_for", max(settings.breaker_open_s, settings.breaker_max_open_s))
        return cls(**options)

    def __getitem__(self, name: str) -> Breaker:
        return self._breakers[name]

    def __iter__(self) -> Iterator[Breaker]:
        return iter(self._breakers.values())

    def check(self, needs: Iterable[str]) -> None:
        """Raise :class:`DependencyDown` for the first of ``needs`` whose breaker refuses calls now.

        Takes no probe slot: while half-open with a slot free the command runs, and its first call
        to the dependency is the probe.
        """
        for name in needs:
            breaker = self._breakers.get(name)
            if breaker is not None and breaker.refuses():
                breaker.rejected += 1
                REJECTIONS.labels(name).inc()
                raise DependencyDown(name, breaker.retry_after())

    def down(self) -> list[str]:
        """The dependencies whose breakers are not closed."""
        return [b.name for b in self if b.state is not BreakerState.CLOSED]

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every breaker's :meth:`Breaker.describe`, by dependency."""
        return {b.name: b.describe() for b in self}


# --- metrics: the state of every live breaker, read at scrape time ------------------------------------
_LIVE: weakref.WeakSet[Breaker] = weakref.WeakSet()


class _StateCollector:
    """``innkeeper_breaker_state{dependency}``: the worst state of the process's breakers of each dependency."""

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("innkeeper_breaker_state", _STATE_HELP, labels=["dependency"])

    def collect(self) -> Iterator[Metric]:
        worst: dict[str, int] = {}
        for breaker in list(_LIVE):
            worst[breaker.name] = max(worst.get(breaker.name, 0), int(breaker.state))
        family = GaugeMetricFamily("innkeeper_breaker_state", _STATE_HELP, labels=["dependency"])
        for name, value in sorted(worst.items()):
            family.add_metric([name], value)
        yield family


_STATE_HELP = "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open"
REGISTRY.register(_StateCollector())
