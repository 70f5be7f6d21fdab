"""The deadline of the work in progress (a command), visible to every retry loop below it.

The command pipeline runs a command's body under ``asyncio.timeout``; that cancels whatever is
still running at the deadline, but a retry loop deep down (the query funnel, a Redis fallback)
cannot see it, so it would start a backoff sleep that the deadline then cuts short, and the user
gets "took too long" instead of what actually failed. :func:`within` publishes the deadline in a
context variable for the duration of a block (nested blocks keep the earlier deadline), and
:func:`allows` tells a retry loop whether a delay still fits before it::

    with deadline.within(10.0):
        await run_command()

    # in a retry loop
    delay = backoff.next()
    if not deadline.allows(delay):
        raise last_error
    await asyncio.sleep(delay)

Outside any :func:`within` block there is no deadline: background work retries as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ("within", "remaining", "allows")

_DEADLINE: ContextVar[float | None] = ContextVar("innkeeper_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[float]:
    """Run the block with a deadline ``seconds`` from now (or the enclosing one, if earlier).

    Yields the deadline, in :func:`time.monotonic` seconds.
    """
    current = _DEADLINE.get()
    when = time.monotonic() + seconds
    if current is not None:
        when = min(when, current)
    token = _DEADLINE.set(when)
    try:
        yield when
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (never below 0), or None without one."""
    when = _DEADLINE.get()
    return None if when is None else max(0.0, when - time.monotonic())


def allows(delay: float) -> bool:
    """Whether waiting ``delay`` seconds (then trying again) still ends before the deadline."""
    left = remaining()
    return left is None or delay < left
