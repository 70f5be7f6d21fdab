"""The cluster's shared-state service: the IPC bus, the shared cache's lifecycle and guild snapshots.

:class:`IPCService` is one ``BotService`` of :class:`shard.bot.ClusterBot` (``bot.ipc``; its bus is
``bot.bus``). It

* runs the cluster's :class:`~ipc.bus.Bus`, answering the standard actions of
  :func:`~ipc.handlers.register_bot_handlers` (``ping``, ``guild_count``, ``shard_status``,
  ``reload_extension``, ``cache_invalidate``) and whatever the cogs add to :attr:`registry`
  (``/status`` adds ``commands.cluster_status``);
* makes sure the process's one :class:`~ipc.cache.SharedCache` listens for invalidations. The command
  layer creates and starts it for guild configuration; when Redis was down at that moment, this
  service keeps subscribing in the background and hands the cache back to the guild
  configuration store once Redis answers;
* saves a snapshot of every guild of this cluster to Redis (:class:`~ipc.snapshots.GuildSnapshotStore`)
  once the cluster is READY, then every ``INNKEEPER_SNAPSHOT_INTERVAL`` seconds and on a clean
  shutdown, in pipelined batches; a guild the bot leaves is forgotten at once;
* relays the process-wide ``innkeeper_*`` metrics (rate limits, bus, cache, commands, database)
  onto the cluster's ``/metrics`` (:meth:`expose_metrics`).

Redis being unreachable never stops the cluster: the bus subscribes with backoff, snapshot saves
are skipped with one warning per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import discord
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.registry import Collector

from innkeeper.errors import InnkeeperError
from ipc.bus import Bus
from ipc.cache import SharedCache
from ipc.handlers import register_bot_handlers
from ipc.registry import HandlerRegistry
from ipc.snapshots import GuildSnapshotStore, snapshot_from_guild

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .bot import ClusterBot

__all__ = ("IPCService", "DefaultRegistryRelay", "SNAPSHOT_BATCH")

_log = logging.getLogger(__name__)

#: Guild snapshots built and sent per Redis pipeline; the event loop gets a turn between batches.
SNAPSHOT_BATCH = 250
#: Seconds the final snapshot save may take at shutdown.
_FINAL_SAVE_TIMEOUT = 10.0

SNAPSHOTS_SAVED = Counter("innkeeper_snapshots_saved_total", "Guild snapshots written to Redis")
SNAPSHOT_SECONDS = Gauge("innkeeper_snapshot_save_seconds", "Duration of the last full snapshot save")
SNAPSHOT_FAILURES = Counter("innkeeper_snapshot_failures_total", "Snapshot saves that failed (Redis unreachable)")


class DefaultRegistryRelay(Collector):
    """Yields the metrics of prometheus_client's default registry whose names start with ``prefix``.

    The ``ipc``, ``db`` and command modules declare their metrics on the default registry; a
    cluster serves its own :class:`~prometheus_client.CollectorRegistry`, to which this relay adds
    them at scrape time.
    """

    def __init__(self, prefix: str = "innkeeper_", source: CollectorRegistry = REGISTRY) -> None:
        self.prefix = prefix
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for metric in self.source.collect():
            if metric.name.startswith(self.prefix):
                yield metric


class IPCService:
    """The bus, the cache's subscription and guild snapshots of one cluster (see the module docstring).

    Parameters
    ----------
    bot:
        The cluster's bot (``redis``, ``keys``, ``cluster_id``, ``guilds``).
    cache:
        The process's shared cache (the command layer's, so there is one per process); ``None``
        makes the service create and own one.
    snapshot_interval_s:
        Seconds between snapshot saves; 0 turns periodic and final saves off.
    snapshot_ttl_s:
        Seconds a snapshot lives in Redis; longer than the interval so that a restart finds them.
    """

    def __init__(self, bot: ClusterBot, *, cache: SharedCache | None = None, snapshot_interval_s: float = 300.0,
                 snapshot_ttl_s: float = 3600.0) -> None:
        self.bot = bot
        self.registry = HandlerRegistry()
        self.cache = cache if cache is not None else SharedCache(bot.redis, bot.keys)
        self._owns_cache = cache is None
        register_bot_handlers(self.registry, bot, cache=self.cache)
        self.bus = Bus(bot.redis, bot.keys, bot.cluster_id, registry=self.registry)
        self.snapshots = GuildSnapshotStore(bot.redis, bot.keys, ttl=max(snapshot_ttl_s, 2 * snapshot_interval_s))
        self.snapshot_interval_s = snapshot_interval_s
        #: Snapshots written by the last full save, and when it finished (``time.time()``).
        self.last_saved = 0
        self.last_saved_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cache_started = False
        self._save_lock = asyncio.Lock()
        self._save_failing = False
        self._listening = False

    # --- BotService -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.bus.start(retry=True)
        if not self.cache.connected:
            # the command layer could not start it (Redis down), or nobody did: keep trying
            await self.cache.start(retry=True)
            self._cache_started = True
            self._spawn(self._attach_cache(), "ipc-cache-attach")
        if self.snapshot_interval_s > 0:
            self._spawn(self._snapshot_loop(), "ipc-snapshots")
        if not self._listening:
            self.bot.add_listener(self._on_guild_remove, "on_guild_remove")
            self._listening = True
        _log.info("IPC bus %s for cluster %d (%d actions)", "up" if self.bus.connected else "connecting",
                  self.bot.cluster_id, len(self.registry))

    async def stop(self) -> None:
        if self._listening:
            self.bot.remove_listener(self._on_guild_remove, "on_guild_remove")
            self._listening = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.snapshot_interval_s > 0 and self.bot.is_ready():
            try:
                async with asyncio.timeout(_FINAL_SAVE_TIMEOUT):
                    saved = await self.save_snapshots()
                _log.info("saved %d guild snapshots at shutdown", saved)
            except (InnkeeperError, TimeoutError) as exc:
                _log.warning("guild snapshots not saved at shutdown: %s", exc)
        await self.bus.stop()
        if self._cache_started or self._owns_cache:
            await self.cache.stop()
            self._cache_started = False

    def expose_metrics(self, registry: CollectorRegistry) -> None:
        """Serve the process-wide ``innkeeper_*`` metrics on ``registry`` too (the cluster's ``/metrics``)."""
        registry.register(DefaultRegistryRelay())

    # --- guild snapshots --------------------------------------------------------------------------
    async def save_snapshots(self) -> int:
        """Save a snapshot of every available guild of this cluster; returns how many.

        Batches of :data:`SNAPSHOT_BATCH` go out as one pipeline each, with a turn for the event
        loop in between, so a cluster of thousands of guilds does not stall its gateway.

        Raises
        ------
        IPCError
            ``REDIS_UNAVAILABLE``.
        """
        async with self._save_lock:
            started = time.perf_counter()
            guilds = [g for g in self.bot.guilds if not g.unavailable]
            saved = 0
            for first in range(0, len(guilds), SNAPSHOT_BATCH):
                batch = []
                for guild in guilds[first:first + SNAPSHOT_BATCH]:
                    try:
                        batch.append(snapshot_from_guild(guild))
                    except Exception:  # noqa: BLE001 - one odd guild must not stop the others
                        _log.exception("cannot snapshot guild %s; skipping it", guild.id)
                saved += await self.snapshots.save_many(batch)
                await asyncio.sleep(0)
            SNAPSHOTS_SAVED.inc(saved)
            SNAPSHOT_SECONDS.set(time.perf_counter() - started)
            self.last_saved, self.last_saved_at = saved, time.time()
            return saved

    async def _snapshot_loop(self) -> None:
        await self.bot.wait_until_ready()
        while True:
            try:
                saved = await self.save_snapshots()
            except InnkeeperError as exc:
                SNAPSHOT_FAILURES.inc()
                if not self._save_failing:
                    _log.warning("guild snapshots not saved (%s); trying again every %.0f s", exc,
                                 self.snapshot_interval_s)
                self._save_failing = True
            except Exception:
                SNAPSHOT_FAILURES.inc()
                _log.exception("saving guild snapshots failed")
            else:
                if self._save_failing:
                    _log.info("guild snapshots saved again")
                self._save_failing = False
                _log.debug("saved %d guild snapshots", saved)
            await asyncio.sleep(self.snapshot_interval_s)

    async def _on_guild_remove(self, guild: discord.Guild) -> None:
        try:
            await self.snapshots.delete(guild.id, guild.shard_id)
        except InnkeeperError as exc:
            _log.debug("could not forget the snapshot of guild %s: %s", guild.id, exc)

    # --- the cache --------------------------------------------------------------------------------
    async def _attach_cache(self) -> None:
        await self.cache.wait_connected()
        store = getattr(getattr(self.bot, "command_runtime", None), "guild_config", None)
        if store is not None and getattr(store, "shared", self.cache) is None:
            store.shared = self.cache
            _log.info("shared cache connected: guild configuration is shared across clusters again")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
