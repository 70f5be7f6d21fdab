"""Prometheus metrics of the command pipeline (served by the cluster's ``/metrics`` endpoint)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram

__all__ = ("COMMANDS_TOTAL", "COMMAND_SECONDS", "PIPELINE_FAILURES", "record_command")

COMMANDS_TOTAL = Counter(
    "innkeeper_commands_total", "Commands handled by the pipeline, by command and outcome", ["command", "outcome"],
)
COMMAND_SECONDS = Histogram(
    "innkeeper_command_seconds", "Command latency from receipt to the end of the pipeline", ["command"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PIPELINE_FAILURES = Counter(
    "innkeeper_pipeline_failures_total",
    "Failures inside the pipeline's own stages (reply, audit, usage, error events), by stage", ["stage"],
)

#: (command, outcome) → the bound children's inc and observe: a label lookup takes a lock, once per pair
_BOUND: dict[tuple[str, str], tuple[Callable[[], None], Callable[[float], None]]] = {}


def record_command(command: str, outcome: str, seconds: float) -> None:
    """Count one invocation of ``command`` with ``outcome``, and observe its latency."""
    bound = _BOUND.get((command, outcome))
    if bound is None:
        bound = _BOUND[(command, outcome)] = (COMMANDS_TOTAL.labels(command, outcome).inc,
                                              COMMAND_SECONDS.labels(command).observe)
    bound[0]()
    bound[1](seconds)
