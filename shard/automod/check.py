"""Automod's per-message check in one pass over the raw payload: :func:`check`.

:mod:`shard.automod.rules` states the rules plainly (:func:`~shard.automod.rules.raw_violations`,
:func:`~shard.automod.rules.repeat_key`); this is the same verdict at the cost a check run on
every message of every guild at ``medium`` or ``high`` can afford (issue 12: automod on costs at
most 10 % of event throughput):

* **the rules on the payload's face** are asked only of a message that could break one: an ``@``
  or a ``/`` in its text, or a non-empty ``mentions`` or ``mention_roles``. Mass mentions need
  mentions, ``@everyone``/``@here`` needs an ``@`` and an invite link a ``/``, so plain chat, nearly
  every message, is decided by two scans of the text for one character each, and builds no tuple,
  no regex match and no rule object;
* **the copy counter** (the one rule every message feeds) takes the message's key computed in
  line, exactly as :func:`~shard.automod.rules.repeat_key` does.

``tests/unit/test_automod_check.py`` proves the verdicts and the counters equal to the plain
rules' on generated messages (hypothesis).
"""

from __future__ import annotations

from typing import Any

from .repeats import RepeatTracker
from .rules import LevelRules, raw_violations

__all__ = ("check",)

_NONE: tuple[str, ...] = ()
_REPEATED = "repeated_message"


def check(data: dict[str, Any], content: str, guild_id: int, rules: LevelRules,
          repeats: RepeatTracker) -> tuple[str, ...]:
    """The rules one raw message breaks, in :data:`~shard.automod.rules.RULES` order (usually ``()``).

    The same answer as :func:`~shard.automod.rules.raw_violations`, followed by
    ``repeated_message`` when the level counts copies and ``repeats`` counts this one at or past
    the rule's ``copies``; the message is counted as a copy either way (as by
    :meth:`~shard.automod.repeats.RepeatTracker.count` with
    :func:`~shard.automod.rules.repeat_key`).

    Parameters
    ----------
    data:
        The raw MESSAGE_CREATE.
    content:
        Its text (a non-empty string).
    guild_id:
        Its guild.
    rules:
        The guild's level.
    repeats:
        The copy counters.
    """
    if "@" in content or "/" in content or data.get("mentions") or data.get("mention_roles"):
        found = raw_violations(data, content, rules)
    else:
        found = _NONE  # no mention, no "@", no "/": no rule on the payload's face can break
    repeat = rules.repeats
    if repeat is None:
        return found
    # repeat_key(author id, content), in line
    text = content.strip().casefold()
    if "  " in text or "\n" in text or "\t" in text or "\r" in text:
        text = " ".join(text.split())
    author = data.get("author")
    key = hash((author.get("id") if isinstance(author, dict) else None, text))
    if repeats.count(guild_id, key, repeat) >= repeat.copies:
        return (*found, _REPEATED)
    return found
