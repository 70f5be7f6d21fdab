"""Jittered exponential backoff (the "full jitter" variant), as in discord.py's ``backoff.py``."""

from __future__ import annotations

import random

__all__ = ("Backoff",)


class Backoff:
    """Delays that grow exponentially up to ``cap`` seconds, each drawn uniformly from ``[0, ceiling]``.

    Parameters
    ----------
    base:
        The ceiling of the first delay, in seconds.
    cap:
        The largest ceiling.
    rng:
        A ``random.Random`` for reproducible tests.
    """

    __slots__ = ("base", "cap", "attempt", "_rng")

    def __init__(self, base: float = 0.1, cap: float = 5.0, *, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The ceiling for the next delay."""
        return float(min(self.cap, self.base * (2 ** min(self.attempt, 30))))

    def next_delay(self) -> float:
        """The next delay in seconds; never zero, so a retry loop always yields."""
        ceiling = self.ceiling()
        self.attempt += 1
        return max(self.base / 10, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        """Start again from the smallest delay (after a success)."""
        self.attempt = 0
