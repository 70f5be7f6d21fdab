"""Automod's Prometheus metrics, with every labelled child bound once at import (no per-event lookups)."""

from __future__ import annotations

from prometheus_client import Counter

from .rules import RULES

__all__ = ("ACTIONS", "AUTOMOD_ACTIONS", "action_counter", "EXEMPT", "DROPPED", "FAILURES", "dropped", "failure")

#: What automod did about a message that broke a rule (see ``docs/operations.md``).
ACTIONS = ("delete", "flag", "refused", "gone", "failed")

AUTOMOD_ACTIONS = Counter("innkeeper_automod_actions_total",
                          "Messages that broke an automod rule, by rule and what was done", ["rule", "action"])
EXEMPT = Counter("innkeeper_automod_exempt_total", "Rule-breaking messages left alone: their author is a moderator")
DROPPED = Counter("innkeeper_automod_dropped_total",
                  "Automod work given up to stay bounded (deletes past the in-flight cap, deferred messages, "
                  "incidents past the log's caps)", ["what"])
FAILURES = Counter("innkeeper_automod_failures_total",
                   "Automod's own failures (a check that raised, a log notice or audit row not written)", ["stage"])

_BOUND = {(rule, action): AUTOMOD_ACTIONS.labels(rule, action) for rule in RULES for action in ACTIONS}
_DROPPED = {what: DROPPED.labels(what) for what in ("deletes", "deferred", "incidents")}
_FAILURES = {stage: FAILURES.labels(stage) for stage in ("inspect", "notice", "audit")}


def action_counter(rule: str, action: str) -> Counter:
    """The bound child of ``innkeeper_automod_actions_total`` for ``rule`` and ``action``."""
    return _BOUND[(rule, action)]


def dropped(what: str) -> Counter:
    """The bound child of ``innkeeper_automod_dropped_total`` for ``what`` (deletes, deferred, incidents)."""
    return _DROPPED[what]


def failure(stage: str) -> Counter:
    """The bound child of ``innkeeper_automod_failures_total`` for ``stage`` (inspect, notice, audit)."""
    return _FAILURES[stage]
