"""Python's cyclic garbage collector, kept off the event loop's back.

A cluster's heap is mostly its start-up state: every guild, channel, role and emoji discord.py
caches, and every module. None of it is garbage, yet each full (generation 2) collection walks all
of it: on the ``dispatch`` benchmark's world (1,000 guilds on one shard) that was about 300 ms per
collection, nine times in a 15-second burst, each time with the event loop stopped (heartbeats,
replies and Redis calls all waited).

:class:`CollectorPolicy` does what large Python services do (Instagram's ``gc.freeze()``):

- once every shard of the cluster is ready in discord.py's sense (its guilds all arrived:
  ``on_shard_ready``) and ``settle_s`` passed without another, it collects once and then freezes
  what survived (:func:`gc.freeze`), so that later collections walk only what was allocated since;
- it does so again after each later ``on_shard_ready`` (a reconnect with a fresh session or a
  reshard rebuilds that shard's guild cache), and once an hour (``refreeze_s``) it unfreezes, collects and
  freezes again, so that reference cycles among frozen objects that died since (a guild the bot
  left) are freed and memory does not creep;
- it times every collection, by generation, in ``innkeeper_gc_pause_seconds``: a pause is a pause
  of the whole event loop.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge, Histogram

from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from discord.ext import commands

    from .tracker import ShardTracker

__all__ = ("CollectorPolicy", "PAUSES", "FROZEN")

_log = logging.getLogger(__name__)

PAUSES = Histogram("innkeeper_gc_pause_seconds", "Garbage collections (the event loop stops meanwhile), by generation",
                   ["generation"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
FROZEN = Gauge("innkeeper_gc_frozen_objects", "Objects frozen out of the garbage collector's reach (gc.freeze)")


class CollectorPolicy:
    """Freezes the cluster's start-up heap out of the collector's reach and times every collection.

    Parameters
    ----------
    bot:
        The cluster's bot (its ``on_shard_ready`` events), or None (then only :meth:`check` decides).
    tracker:
        The cluster's shard tracker (its ``cluster_state()`` says when every shard is READY).
    freeze:
        Freeze the heap once READY (``INNKEEPER_GC_FREEZE``); timing runs either way.
    refreeze_s:
        Seconds between unfreeze-collect-freeze rounds while READY (0: never).
    poll_s:
        Seconds between looks at the cluster's state.
    settle_s:
        Quiet seconds after the last ``on_shard_ready`` before freezing (the other shards' guilds).
    """

    __slots__ = ("bot", "tracker", "freeze", "refreeze_s", "poll_s", "settle_s", "frozen_at", "freezes", "_tasks",
                 "_started", "_observe", "_shard_ready_at")

    def __init__(self, bot: commands.AutoShardedBot | None, tracker: ShardTracker, *, freeze: bool = True,
                 refreeze_s: float = 3600.0, poll_s: float = 1.0, settle_s: float = 1.0) -> None:
        self.bot = bot
        self.tracker = tracker
        self.freeze = freeze
        self.refreeze_s = refreeze_s
        self.poll_s = poll_s
        self.settle_s = settle_s
        #: ``time.monotonic()`` of the last freeze, or None.
        self.frozen_at: float | None = None
        #: Freezes done so far.
        self.freezes = 0
        self._tasks = BackgroundTasks("gc")
        self._started = 0.0
        self._observe = tuple(PAUSES.labels(str(g)).observe for g in range(3))
        #: ``time.monotonic()`` of the last ``on_shard_ready`` not frozen yet, or None.
        self._shard_ready_at: float | None = None

    async def start(self) -> None:
        gc.callbacks.append(self._on_collection)
        if self.freeze:
            if self.bot is not None:
                self.bot.add_listener(self.on_shard_ready, "on_shard_ready")
            self._tasks.every(self.poll_s, self.check, name="freeze")

    async def stop(self) -> None:
        if self.bot is not None:
            self.bot.remove_listener(self.on_shard_ready, "on_shard_ready")
        await self._tasks.cancel()
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    async def on_shard_ready(self, shard_id: int) -> None:
        """A shard's guilds have all arrived: freeze once the cluster settles."""
        self._shard_ready_at = time.monotonic()

    async def check(self) -> None:
        """Freeze ``settle_s`` after the last shard became ready with the cluster READY, or when the last
        freeze is ``refreeze_s`` old."""
        if self.tracker.cluster_state() != "READY":
            return
        now = time.monotonic()
        if self._shard_ready_at is not None and now - self._shard_ready_at >= self.settle_s:
            self._shard_ready_at = None
            self.collect_and_freeze(unfreeze=False)
        elif self.refreeze_s > 0 and self.frozen_at is not None and now - self.frozen_at >= self.refreeze_s:
            self.collect_and_freeze(unfreeze=True)

    def collect_and_freeze(self, *, unfreeze: bool) -> None:
        """Collect (everything, after ``gc.unfreeze()`` when ``unfreeze``), then freeze what is left."""
        started = time.perf_counter()
        if unfreeze:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.frozen_at = time.monotonic()
        self.freezes += 1
        FROZEN.set(gc.get_freeze_count())
        _log.info("garbage collector: %d objects frozen in %.0f ms", gc.get_freeze_count(),
                  (time.perf_counter() - started) * 1000.0)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info.get("generation", 2)
            self._observe[generation if 0 <= generation <= 2 else 2](time.perf_counter() - self._started)
