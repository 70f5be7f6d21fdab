"""Jittered exponential backoff: the one every retry loop of every process uses.

Delay ``n`` (counting from 0) is drawn uniformly from ``[c × (1 − jitter), c]`` where the
ceiling ``c = min(cap, base × 2ⁿ)``. ``jitter=1`` is the "full jitter" of discord.py's
``backoff.py``; the default ``0.5`` keeps every delay at least half its ceiling, so a loop never
spins, while many processes retrying at once still spread out. A delay never exceeds ``cap``::

    backoff = Backoff(0.1, 5.0)
    while not await try_once():
        await asyncio.sleep(backoff.next())
"""

from __future__ import annotations

import random

__all__ = ("Backoff",)


class Backoff:
    """Delays that grow from ``base`` to ``cap`` seconds, each with some randomness.

    Parameters
    ----------
    base:
        The ceiling of the first delay, in seconds.
    cap:
        The largest ceiling.
    jitter:
        The fraction of each ceiling that is random (0: none, 1: anything from 0 to the ceiling).
    rng:
        A ``random.Random`` for reproducible tests.

    Raises
    ------
    ValueError
        Unless ``0 < base <= cap`` and ``0 <= jitter <= 1``.
    """

    __slots__ = ("base", "cap", "jitter", "attempts", "_rng")

    def __init__(self, base: float = 0.1, cap: float = 5.0, *, jitter: float = 0.5,
                 rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        if not 0 <= jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        #: Delays handed out since the last :meth:`reset`.
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int | None = None) -> float:
        """The ceiling of the next delay (or of delay number ``attempt``, counting from 0)."""
        n = self.attempts if attempt is None else max(attempt, 0)
        return float(min(self.cap, self.base * (2 ** min(n, 62))))

    def next(self) -> float:
        """The next delay in seconds: never zero (a retry loop always yields), never above ``cap``."""
        delay = self.delay(self.attempts)
        self.attempts += 1
        return delay

    def delay(self, attempt: int) -> float:
        """Delay number ``attempt`` (counting from 0), drawn as :meth:`next` draws it, without counting it.

        For retries whose count is kept elsewhere (a reminder's ``attempts`` in the database).
        """
        ceiling = self.ceiling(attempt)
        return max(self.base / 10, self._rng.uniform(ceiling * (1 - self.jitter), ceiling))

    def reset(self) -> None:
        """Start again from ``base`` (after a success)."""
        self.attempts = 0
