"""Refused attempts cost the one refused, not the bot: a throttle of their own, before any reply.

A *refusal* is a command that failed before its body ran: a bad argument (discord.py's converters
or the validate stage), a server-only command in DMs, a feature or command turned off, a level too
low, the command's own throttle, an alias that cannot expand, or a guild configuration that cannot
be read while the database is down. Each would answer with a reply (a REST call, or an interaction
callback), and an audited command would write a "denied" row, so a user repeating one could flood
the channel, the audit log and Discord's invalid-request budget.

:class:`RefusalGate` counts every refusal against :data:`REFUSAL_RULE`, per user and across every
command, server and cluster (the pipeline's throttle, under a key no command can have). While the
rule allows it the user is told why; past it the refusal is silent (no message, no interaction
callback) until the window frees up. Bot owners are always told. Denied rows are aggregated
separately (:mod:`shard.pipeline.denials`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import Counter

from .throttling import Throttle, ThrottleRule

__all__ = ("RefusalGate", "REFUSAL_RULE", "REFUSAL_KEY", "REFUSALS_SILENCED")

_log = logging.getLogger(__name__)

#: How many refusals a user is told about: 5 per minute, whatever the command.
REFUSAL_RULE = ThrottleRule(5, 60.0, "user")
#: The throttle's "command" for refusals (a space and a tilde: never a command's name).
REFUSAL_KEY = "~ refused"

REFUSALS_SILENCED = Counter("innkeeper_command_refusals_silenced_total",
                            "Refused commands not answered because the user was refused too often",
                            ["command"])


class RefusalGate:
    """Decides whether a refused user is told why (see the module docstring).

    Parameters
    ----------
    throttle:
        The throttle shared by every cluster (the pipeline's).
    owner_ids:
        ``Settings.owner_ids``: always told.
    rule:
        How many refusals are told per user.
    """

    __slots__ = ("throttle", "owner_ids", "rule")

    def __init__(self, throttle: Throttle, *, owner_ids: Iterable[int] = (), rule: ThrottleRule = REFUSAL_RULE
                 ) -> None:
        self.throttle = throttle
        self.owner_ids = frozenset(owner_ids)
        self.rule = rule

    async def may_answer(self, command: str, user_id: int, guild_id: int | None) -> bool:
        """Count one refusal of ``user_id``; True while they may still be told about it.

        Never raises: when the throttle itself fails, the user is told (as before this gate).
        """
        if user_id in self.owner_ids:
            return True
        try:
            verdict = await self.throttle.hit(REFUSAL_KEY, user_id, guild_id, (self.rule,))
        except Exception:
            _log.exception("the refusal throttle failed; answering the refusal")
            return True
        if not verdict.allowed:
            REFUSALS_SILENCED.labels(command).inc()
            return False
        return True
