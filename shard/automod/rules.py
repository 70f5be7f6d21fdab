"""Automod's rules and their thresholds per level, judged on the raw MESSAGE_CREATE payload.

:data:`LEVELS` is the one table of what each level of ``/settings set key:automod`` enforces;
``docs/commands.md`` is generated from it (:func:`describe_levels`). The checks here read only the
raw payload (``content``, ``mentions``, ``mention_roles``); nothing builds a discord.py object.
Two things need more than the payload, and are decided by :mod:`shard.automod.judge` only for a
message that broke a rule here: whether its author is exempt (a moderator), and, for
``@everyone``/``@here``, whether the author may mention everyone in that channel.

=====================  =====================================  ==========================  ==========================
rule                   low                                    medium                      high
=====================  =====================================  ==========================  ==========================
``mass_mentions``      more than 10 user and role mentions    more than 6                 more than 4
``everyone_mention``   ``@everyone``/``@here`` by a member without *Mention Everyone* in the channel (every level)
``invite_link``        —                                      any Discord invite link     any Discord invite link
``repeated_message``   —                                      the 5th copy within 10 s    the 3rd copy within 10 s
=====================  =====================================  ==========================  ==========================

Invite links are ``discord.gg/<code>``, ``discord.com/invite/<code>`` and
``discordapp.com/invite/<code>`` (any case, with or without a scheme or subdomain). A *copy* is a
message by the same author in the same server whose text is the same once case, the ends' spacing
and runs of spaces, tabs and line breaks are ignored; once a copy breaks the rule, every further
copy is acted on until the author has not repeated it for the window's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ("RULES", "RULE_LABELS", "RepeatRule", "LevelRules", "LEVELS", "INVITE_RE", "rules_for",
           "raw_violations", "repeat_key", "describe_levels", "MAX_REPEAT_WINDOW_S")

#: Every rule, in the order a message that breaks several is reported by (the first confirmed one).
RULES = ("mass_mentions", "everyone_mention", "invite_link", "repeated_message")
RULE_LABELS = {"mass_mentions": "mass mentions", "everyone_mention": "@everyone/@here mention",
               "invite_link": "invite link", "repeated_message": "repeated message"}

INVITE_RE = re.compile(r"(?:discord\.gg|discord(?:app)?\.com/invite)/[a-z0-9-]{2,}", re.IGNORECASE | re.ASCII)

_NONE: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RepeatRule:
    """The ``copies``-th copy of a message within ``window_s`` seconds of the first breaks the rule."""

    copies: int
    window_s: float


@dataclass(frozen=True, slots=True)
class LevelRules:
    """What one automod level enforces.

    Attributes
    ----------
    name:
        The level's name (``AUTOMOD_NAMES``).
    max_mentions:
        More user and role mentions than this in one message break ``mass_mentions``.
    everyone:
        ``@everyone``/``@here`` by a member who may not mention everyone breaks ``everyone_mention``.
    invites:
        Invite links break ``invite_link``.
    repeats:
        The ``repeated_message`` rule, or None.
    """

    name: str
    max_mentions: int
    everyone: bool
    invites: bool
    repeats: RepeatRule | None


#: Indexed by the stored level: 0 (off) has no rules.
LEVELS: tuple[LevelRules | None, ...] = (
    None,
    LevelRules("low", max_mentions=10, everyone=True, invites=False, repeats=None),
    LevelRules("medium", max_mentions=6, everyone=True, invites=True, repeats=RepeatRule(5, 10.0)),
    LevelRules("high", max_mentions=4, everyone=True, invites=True, repeats=RepeatRule(3, 10.0)),
)
#: The longest repeat window of any level: how long repeat state can matter.
MAX_REPEAT_WINDOW_S = max(r.repeats.window_s for r in LEVELS if r is not None and r.repeats is not None)


def rules_for(level: int) -> LevelRules | None:
    """The rules of a stored level (None for off, and for a level this code does not know)."""
    return LEVELS[level] if 0 <= level < len(LEVELS) else None


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def raw_violations(data: dict[str, Any], content: str, rules: LevelRules) -> tuple[str, ...]:
    """The rules the raw message breaks on its face, in :data:`RULES` order (usually none: ``()``).

    ``everyone_mention`` is a candidate only: the author may be allowed to mention everyone.
    ``repeated_message`` needs the author's history (:class:`~shard.automod.repeats.RepeatTracker`).
    """
    found = _NONE
    mentions = data.get("mentions")
    roles = data.get("mention_roles")
    if (mentions or roles) and _count(mentions) + _count(roles) > rules.max_mentions:
        found = ("mass_mentions",)
    if "@" in content and rules.everyone and ("@everyone" in content or "@here" in content):
        found = (*found, "everyone_mention")
    if "/" in content and rules.invites and INVITE_RE.search(content) is not None:
        found = (*found, "invite_link")
    return found


def repeat_key(author_id: object, content: str) -> int:
    """What makes two messages copies of each other: the author, and the text without case or spacing.

    Case is folded, the ends are stripped, and runs of spaces, tabs and line breaks count as one
    space (the whitespace is only rebuilt when the text has such a run: most texts have none).
    """
    text = content.strip().casefold()
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        text = " ".join(text.split())
    return hash((author_id, text))


def describe_levels() -> list[str]:
    """Markdown lines for ``docs/commands.md``: the thresholds of every level, from :data:`LEVELS`."""
    levels = [r for r in LEVELS if r is not None]
    head = "| rule | " + " | ".join(f"`{r.name}`" for r in levels) + " |"
    lines = [head, "|---|" + "---|" * len(levels)]

    def row(rule: str, cells: list[str]) -> None:
        lines.append(f"| {RULE_LABELS[rule]} | " + " | ".join(cells) + " |")

    row("mass_mentions", [f"more than {r.max_mentions} user and role mentions in one message" for r in levels])
    row("everyone_mention", ["by a member without Mention Everyone in the channel" if r.everyone else "—"
                             for r in levels])
    row("invite_link", ["`discord.gg/…`, `discord.com/invite/…`, `discordapp.com/invite/…`" if r.invites else "—"
                        for r in levels])
    row("repeated_message", [f"the {_ordinal(r.repeats.copies)} copy within {r.repeats.window_s:g} s"
                             if r.repeats is not None else "—" for r in levels])
    return lines


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
