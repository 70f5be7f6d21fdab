"""Jittered exponential backoff for reconnect loops (Redis pub/sub, the rate limiter's probe)."""

from __future__ import annotations

import random

__all__ = ("Backoff",)


class Backoff:
    """Delays that grow ``base * 2**n`` up to ``cap``, each with ±``jitter`` randomness.

    Parameters
    ----------
    base:
        The first delay in seconds.
    cap:
        The largest delay in seconds.
    jitter:
        Fraction of the delay added or removed at random, so that many clients spread out.
    """

    __slots__ = ("base", "cap", "jitter", "_attempt", "_rng")

    def __init__(self, base: float = 0.1, cap: float = 5.0, jitter: float = 0.25) -> None:
        if base <= 0 or cap < base or not 0 <= jitter < 1:
            raise ValueError("need 0 < base <= cap and 0 <= jitter < 1")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self._attempt = 0
        self._rng = random.Random()

    def next(self) -> float:
        """The next delay in seconds."""
        delay = min(self.cap, self.base * (2 ** min(self._attempt, 32)))
        self._attempt += 1
        return max(0.0, delay * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Start again from ``base`` (after a success)."""
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
