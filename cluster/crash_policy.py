"""The crash-loop guard's policy: after a late death, restart with a growing delay, and past a cap stay down.

supervisord's ``startsecs``/``startretries`` only cover a process that dies while it starts. A
cluster that dies later (after READY) is the crash-loop guard's (:mod:`cluster.crash_guard`), which
asks this module what to do. Everything here is pure: a crash history, a time and an exit code in,
a :class:`CrashRecord` out, so the policy is unit-tested without processes.

Rules, with the defaults (settings ``INNKEEPER_CRASH_*``):

* Crashes older than the window (600 s) are forgotten.
* The first crash within the window is restarted at once: with its sessions saved, a cluster
  RESUMEs in a few seconds and spends nothing (``shard/resume.py``). The n-th (n ≥ 2) is
  followed by a restart after ``base × 2^(n-2)`` seconds (1, 2, 4 … s), never more than
  ``backoff_max`` (60 s).
* The ``max``-th crash (5) within the window is not restarted: the cluster stays down, and the
  record says why (``crash loop: 5 crashes in 10 min; last exit code 1; stopped``).
* An operator's start of a stopped cluster (``innkeeper restart N``) starts a fresh history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

__all__ = ("GUARD_SETTINGS", "CrashPolicy", "CrashRecord", "on_crash", "on_restarted", "record_from_json",
           "format_window", "exit_text",
           "RESTARTING", "STOPPED", "RUNNING")

#: The guard will start the cluster again at ``restart_at``.
RESTARTING: Final = "restarting"
#: Past the cap: the cluster stays down until an operator starts it.
STOPPED: Final = "stopped"
#: Restarted by the guard and running; ``crashes`` still counts towards the cap within the window.
RUNNING: Final = "running"

#: The settings the guard process reads (``run/crash-guard-settings.json``): no token, no keys, no database.
GUARD_SETTINGS = ("redis_url", "redis_prefix", "run_dir", "log_format", "log_level", "crash_loop_max",
                  "crash_loop_window_s", "crash_backoff_base_s", "crash_backoff_max_s")

GuardState = Literal["restarting", "stopped", "running"]


class CrashRecord(TypedDict):
    """What the guard knows of one cluster: stored in Redis, shown by status, ``innkeeper status`` and metrics."""

    cluster: int
    state: GuardState
    #: Times (epoch seconds) of the crashes within the window, oldest first.
    crashes: list[float]
    #: Exit code of the last crash; -1 when a signal ended it (``kill -9``).
    last_exit: int | None
    #: When the guard starts it again (state ``restarting``).
    restart_at: float | None
    #: Restarts the guard made since it first saw this cluster crash (a counter, for metrics).
    restarts: int
    #: The policy's cap and window, so the record explains itself.
    max_crashes: int
    window_s: float
    #: One line for ops, e.g. ``crash loop: 5 crashes in 10 min; last exit code 1; stopped``.
    reason: str


@dataclass(frozen=True, slots=True)
class CrashPolicy:
    """The cap and the back-off.

    Parameters
    ----------
    max_crashes:
        ``INNKEEPER_CRASH_LOOP_MAX``: the crash within the window that leaves the cluster down.
    window_s:
        ``INNKEEPER_CRASH_LOOP_WINDOW``: how long a crash counts.
    backoff_base_s, backoff_max_s:
        ``INNKEEPER_CRASH_BACKOFF_BASE`` / ``_MAX``: the first delay, and the longest.
    """

    max_crashes: int = 5
    window_s: float = 600.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> CrashPolicy:
        return cls(settings.crash_loop_max, settings.crash_loop_window_s, settings.crash_backoff_base_s,
                   settings.crash_backoff_max_s)

    def delay(self, crashes: int) -> float:
        """Seconds before the restart that follows the ``crashes``-th crash within the window (≥ 1)."""
        if crashes <= 1:
            return 0.0
        exponent = min(crashes - 2, 60)  # 2**60 s is past any cap: no overflow, no float inf
        return float(min(self.backoff_base_s * 2.0 ** exponent, self.backoff_max_s))

    def recent(self, crashes: Sequence[float], now: float) -> list[float]:
        """The crashes that still count at ``now``, oldest first."""
        return sorted(t for t in crashes if now - t < self.window_s)


def format_window(seconds: float) -> str:
    """``600`` → ``10 min``, ``90`` → ``90 s``, ``7200`` → ``2 h``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def exit_text(code: int | None) -> str:
    if code is None:
        return "exit unknown"
    return "killed by a signal" if code < 0 else f"exit code {code}"


def on_crash(policy: CrashPolicy, previous: CrashRecord | None, cluster: int, now: float,
             exit_code: int | None) -> CrashRecord:
    """The record after a late death of ``cluster`` at ``now``: restart after a delay, or stay down."""
    crashes = [*policy.recent(previous["crashes"] if previous else (), now), now]
    restarts = previous["restarts"] if previous else 0
    n = len(crashes)
    window = format_window(policy.window_s)
    base: CrashRecord = {"cluster": cluster, "state": RESTARTING, "crashes": crashes, "last_exit": exit_code,
                         "restart_at": None, "restarts": restarts, "max_crashes": policy.max_crashes,
                         "window_s": policy.window_s, "reason": ""}
    if n >= policy.max_crashes:
        return {**base, "state": STOPPED,
                "reason": f"crash loop: {n} crashes in {window}; last {exit_text(exit_code)}; stopped "
                          f"(`innkeeper restart {cluster}` starts it again)"}
    delay = policy.delay(n)
    return {**base, "restart_at": now + delay,
            "reason": f"crashed ({exit_text(exit_code)}): crash {n} of {policy.max_crashes} in {window}; "
                      f"restarting in {delay:g} s"}


def on_restarted(record: CrashRecord) -> CrashRecord:
    """The record once the guard has started the cluster again."""
    n = len(record["crashes"])
    return {**record, "state": RUNNING, "restart_at": None, "restarts": record["restarts"] + 1,
            "reason": f"restarted after crash {n} of {record['max_crashes']} in {format_window(record['window_s'])} "
                      f"(last {exit_text(record['last_exit'])})"}


def record_from_json(data: Any) -> CrashRecord | None:
    """A record read back (Redis); None when it is not one (a foreign or older value is ignored, not trusted)."""
    try:
        state = data["state"]
        if state not in (RESTARTING, STOPPED, RUNNING):
            return None
        restart_at = data.get("restart_at")
        last_exit = data.get("last_exit")
        return {"cluster": int(data["cluster"]), "state": state, "crashes": [float(t) for t in data["crashes"]],
                "last_exit": None if last_exit is None else int(last_exit),
                "restart_at": None if restart_at is None else float(restart_at), "restarts": int(data["restarts"]),
                "max_crashes": int(data["max_crashes"]), "window_s": float(data["window_s"]),
                "reason": str(data["reason"])}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
