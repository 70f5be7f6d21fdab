"""Discord's nonce deduplication of message sends (``enforce_nonce``).

``developers/resources/message.mdx``, "Create Message", JSON params: ``nonce`` (integer or
string, "up to 25 characters") and ``enforce_nonce``: "If true and nonce is present, it will be
checked for uniqueness in the past few minutes. If another message was created by the same author
with the same nonce, that message will be returned and no new message will be created."

So a send repeated after a timeout, or by another process that took over the work, creates one
message while the first is remembered. The docs name no exact window ("the past few minutes"):
the simulator keeps nonces ``--nonce-window`` seconds (300 by default). A send without
``enforce_nonce`` is never deduplicated, as on Discord.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ("RecentNonces", "MAX_NONCE_LENGTH")

#: "up to 25 characters" (``message.mdx``, Create Message).
MAX_NONCE_LENGTH = 25


class RecentNonces:
    """The nonces of recently created messages, per author, for ``window`` seconds.

    Parameters
    ----------
    window:
        Seconds a nonce is remembered.
    clock:
        Monotonic seconds (the simulator's clock, so tests can move it).
    """

    __slots__ = ("_clock", "_seen", "window")

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._seen: OrderedDict[tuple[int, str], tuple[float, int, int]] = OrderedDict()

    def _expire(self) -> None:
        horizon = self._clock() - self.window
        while self._seen:
            key, (at, _, _) = next(iter(self._seen.items()))
            if at > horizon:
                break
            del self._seen[key]

    def find(self, author_id: int, nonce: str | int) -> tuple[int, int] | None:
        """``(channel_id, message_id)`` of the message ``author_id`` created with ``nonce`` lately, or None."""
        self._expire()
        found = self._seen.get((author_id, str(nonce)))
        return None if found is None else (found[1], found[2])

    def remember(self, author_id: int, nonce: str | int, channel_id: int, message_id: int) -> None:
        """Record that ``author_id`` created ``message_id`` in ``channel_id`` with ``nonce``."""
        self._expire()
        key = (author_id, str(nonce))
        self._seen.pop(key, None)
        self._seen[key] = (self._clock(), channel_id, message_id)

    def __len__(self) -> int:
        self._expire()
        return len(self._seen)
