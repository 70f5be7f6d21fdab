"""Hand the heap that start-up and bursts freed back to the operating system: glibc's ``malloc_trim``.

glibc keeps memory that ``free`` returned inside the process for later ``malloc`` calls. After a
burst, the buffers of large gateway payloads and decoded JSON it freed stay resident: in ``bench
memory`` a cluster's RSS stayed 4 MiB higher than ``malloc_trim(0)`` brings it (98 → 94 MiB after a
cold burst of 20,000 messages; 1.5 MiB after start-up). :class:`MemoryTrim` calls it once the
shards are READY (what start-up freed), then every ``INNKEEPER_MALLOC_TRIM_INTERVAL`` seconds (30),
and counts what came back
(``innkeeper_malloc_trim_freed_bytes_total``). Python's own small-object arenas are not glibc's heap
and come back only when they empty, which is why the read gate bounds a burst's high-water mark
(:mod:`shard.read_gate`).

``gc.freeze()`` after start-up was tried and left out: it frees nothing (every start-up object is
alive), it only spares the collector from scanning them.

Off (a no-op) where the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from innkeeper.services import BackgroundTasks

from .heartbeat_writer import rss_bytes

__all__ = ("MemoryTrim", "glibc_malloc_trim", "TRIM_FREED")

_log = logging.getLogger(__name__)

TRIM_FREED = Counter("innkeeper_malloc_trim_freed_bytes", "Resident bytes malloc_trim handed back to the OS")


def glibc_malloc_trim() -> Callable[[], int] | None:
    """``malloc_trim(0)`` of this process's C library, or None where it has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class MemoryTrim:
    """Calls ``malloc_trim(0)`` every ``interval_s`` seconds (see the module docstring).

    Parameters
    ----------
    interval_s:
        Seconds between trims; 0 turns it off.
    trim:
        The trim function (:func:`glibc_malloc_trim`'s by default); None turns it off.
    rss:
        This process's resident set size in bytes (to count what a trim returned).
    ready:
        Awaited before the first trim (the bot's ``wait_until_ready``); without it the first trim
        comes one interval after :meth:`start`.
    """

    __slots__ = ("interval_s", "freed", "_trim", "_rss", "_ready", "_tasks")

    def __init__(self, interval_s: float = 30.0, *, trim: Callable[[], int] | None = None,
                 rss: Callable[[], int] = rss_bytes, ready: Callable[[], Awaitable[object]] | None = None) -> None:
        if interval_s < 0:
            raise ValueError("interval_s is 0 or more")
        self.interval_s = interval_s
        #: Bytes the trims so far handed back.
        self.freed = 0
        self._trim = trim
        self._rss = rss
        self._ready = ready
        self._tasks = BackgroundTasks("memory-trim")

    @classmethod
    def for_this_process(cls, interval_s: float, *, ready: Callable[[], Awaitable[object]] | None = None) -> MemoryTrim:
        """With glibc's ``malloc_trim`` when there is one."""
        return cls(interval_s, trim=glibc_malloc_trim(), ready=ready)

    async def start(self) -> None:
        if self.interval_s > 0 and self._trim is not None and not len(self._tasks):
            self._tasks.every(self.interval_s, self.run_once, name="trim", run_first=self._ready is not None,
                              wait_first=self._ready)

    async def run_once(self) -> int:
        """Trim once; the resident bytes it handed back."""
        if self._trim is None:
            return 0
        before = self._rss()
        started = time.perf_counter()
        self._trim()
        freed = max(0, before - self._rss())
        self.freed += freed
        TRIM_FREED.inc(freed)
        if freed:
            _log.debug("malloc_trim handed back %d KiB in %.1f ms", freed // 1024,
                       (time.perf_counter() - started) * 1000)
        return freed

    async def stop(self) -> None:
        await self._tasks.cancel()
