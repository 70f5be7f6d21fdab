"""``ClusterBot``: the ``AutoShardedBot`` each cluster process runs over its shard range.

The bot itself stays a plain discord.py bot. Cluster concerns plug in as *services*: objects
with ``async start()`` and ``async stop()`` that :meth:`ClusterBot.setup_hook` starts in order and
:meth:`ClusterBot.close` stops in reverse order (heartbeats, metrics, the watchdog, the IPC bus…).

Shared state (``ipc``): one ``redis.asyncio`` client (``bot.redis``) serves every component. The
shared REST rate limiter (``bot.rate_limiter``) is installed on the HTTP client before login, so
every REST, webhook and interaction request goes through it (``INNKEEPER_SHARED_RATELIMIT=false``
leaves discord.py's per-process limits alone). The IPC bus (``bot.bus``), the shared cache's
subscription and the guild snapshots run as :class:`~shard.ipc_service.IPCService` (``bot.ipc``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import discord
import redis.asyncio as aioredis
from discord.ext import commands
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from innkeeper.settings import Settings
from ipc.keys import Keys
from ipc.ratelimit import SharedRateLimiter, install

from .cogs import EXTENSIONS
from .identify_fallback import LocalIdentifyPacer, identify_with_fallback
from .ipc_service import IPCService
from .launch import launch_shards
from .pipeline.context import PipelineContext
from .pipeline.prefixes import context_for, guild_prefix
from .pipeline.runtime import CommandRuntime
from .reminder_service import ReminderService
from .runtime import ClusterRuntime
from .urls import point_discord_at

__all__ = ("ClusterBot", "BotService", "build_intents", "redis_client", "REDIS_MAX_CONNECTIONS")

_log = logging.getLogger(__name__)

#: Connections in the one Redis pool of a cluster: rate limiter, bus, cache, throttle, heartbeat,
#: identify queue and sessions all draw from it (each bounds its own concurrency well below this).
REDIS_MAX_CONNECTIONS = 200


def redis_client(url: str) -> aioredis.Redis:
    """The cluster's Redis client: bytes replies, one big pool, and calls that fail fast.

    redis-py retries a failed call 10 times by default (seconds of backoff): while Redis is down
    that would hold every command that touches the cache or the throttle. Two quick retries cover
    a pooled connection that went stale (a restarted Redis); past that each component falls back
    on its own (local limits, local throttle, the database) and recovers by itself.
    """
    return aioredis.from_url(url, max_connections=REDIS_MAX_CONNECTIONS, decode_responses=False,
                             health_check_interval=30, socket_connect_timeout=2.0, socket_timeout=5.0,
                             retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2))


class BotService(Protocol):
    """A background part of a cluster process, started after login and stopped before logout."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_intents() -> discord.Intents:
    """The intents a large bot needs: guilds and messages, no presences, no member list."""
    intents = discord.Intents.default()
    intents.message_content = True  # prefix commands
    intents.members = False
    intents.presences = False
    intents.typing = False
    return intents


class ClusterBot(commands.AutoShardedBot):
    """One cluster's bot.

    Parameters
    ----------
    settings:
        The process's settings.
    cluster_id:
        This cluster's index in the plan; names its heartbeat, metrics port and logs.
    shard_ids:
        The shards this cluster runs, or ``None`` to run every shard.
    shard_count:
        The bot's total shard count, or ``None`` to ask ``GET /gateway/bot``.
    extensions:
        Extensions to load; defaults to :data:`shard.cogs.EXTENSIONS`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cluster_id: int = 0,
        shard_ids: Sequence[int] | None = None,
        shard_count: int | None = None,
        extensions: Sequence[str] = EXTENSIONS,
        **options: Any,
    ) -> None:
        point_discord_at(settings.api_url)
        if shard_ids is not None:
            options["shard_ids"] = list(shard_ids)
        super().__init__(
            command_prefix=guild_prefix,
            intents=build_intents(),
            shard_count=shard_count,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=1000,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=True),
            **options,
        )
        self.settings = settings
        self.cluster_id = cluster_id
        self.keys = Keys(settings.redis_prefix)
        self.redis: aioredis.Redis = redis_client(settings.redis_url)
        # Every REST call goes through the shared limiter; it must be installed before login.
        self.rate_limiter: SharedRateLimiter | None = None
        if settings.shared_ratelimit:
            self.rate_limiter = SharedRateLimiter.from_settings(self.redis, self.keys, settings)
            install(self, self.rate_limiter)
        else:
            _log.warning("INNKEEPER_SHARED_RATELIMIT is off: REST limits are per process (discord.py's own)")
        self.services: list[BotService] = []
        self._extensions = tuple(extensions)
        self._started_services: list[BotService] = []
        self.fatal_error: BaseException | None = None
        # The command layer: database, guild config, usage, throttle and the one command pipeline.
        self.command_runtime = CommandRuntime(self)
        self.pipeline = self.command_runtime.pipeline
        # The IPC bus, the shared cache's subscription (one cache per process: the command layer's)
        # and guild snapshots. Built here so that cogs can register bus actions when they load.
        self.ipc = IPCService(self, cache=self.command_runtime.cache,
                              snapshot_interval_s=settings.snapshot_interval_s)
        self.bus = self.ipc.bus
        self.services.extend((self.command_runtime, self.ipc, ReminderService(self)))
        self.runtime: ClusterRuntime | None = None
        self._identify_pacer = LocalIdentifyPacer(settings.identify_window_s, settings.identify_margin_s)

    # --- lifecycle ------------------------------------------------------------------------------
    async def setup_hook(self) -> None:
        for name in self._extensions:
            await self.load_extension(name)
        self.services.extend(self.build_services())
        for service in self.services:
            await service.start()
            self._started_services.append(service)
        if self.cluster_id == 0 and self.settings.sync_commands:
            synced = await self.tree.sync()
            _log.info("synced %d application commands", len(synced))

    def build_services(self) -> list[BotService]:
        """The services this cluster runs; override or extend to add more."""
        self.runtime = ClusterRuntime(self)  # identify queue, heartbeat, /metrics, watchdog
        self.ipc.expose_metrics(self.runtime.metrics.registry)
        return [self.runtime]

    async def launch_shards(self) -> None:
        # One lane per identify bucket, the lanes concurrently (shard/launch.py); discord.py's own
        # launch connects the shards one after the other, which serialises the buckets.
        queue = self.runtime.queue if self.runtime is not None else None
        if queue is None:
            await super().launch_shards()
        else:
            await launch_shards(self, queue.max_concurrency)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # The shared identify queue (ipc/identify) replaces discord.py's 5 s sleep per shard; while
        # Redis is unreachable the shard identifies on local pacing instead of waiting for it.
        if self.runtime is not None:
            await identify_with_fallback(self.runtime, self.redis, self._identify_pacer, shard_id, initial=initial)
        else:
            await super().before_identify_hook(shard_id, initial=initial)

    async def close(self) -> None:
        for service in reversed(self._started_services):
            try:
                await service.stop()
            except Exception:
                _log.exception("service %r failed to stop", service)
        self._started_services.clear()
        await super().close()
        if self.rate_limiter is not None:
            await self.rate_limiter.close()
        await self.redis.aclose()

    # --- events ---------------------------------------------------------------------------------
    async def on_ready(self) -> None:
        _log.info("cluster %d ready: %d shards, %d guilds", self.cluster_id, len(self.shards), len(self.guilds))

    async def on_shard_ready(self, shard_id: int) -> None:
        _log.info("shard %d ready", shard_id, extra={"shard_id": shard_id})

    async def get_context(self, origin: discord.Message | discord.Interaction[Any], /, *,
                          cls: type[commands.Context[Any]] = PipelineContext) -> Any:
        ctx = await super().get_context(origin, cls=cls)
        return await context_for(self, ctx) if isinstance(origin, discord.Message) else ctx

    async def on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        await self.pipeline.on_command_error(ctx, error)


async def run_cluster(bot: ClusterBot, token: str) -> None:
    """Run ``bot`` until it closes or SIGTERM/SIGINT arrives, closing it gracefully either way."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(bot.start(token), name="bot")
    waiter = asyncio.create_task(stop.wait(), name="signal")
    try:
        done, _ = await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # re-raise login or gateway failures
        else:
            _log.info("signal received: closing the cluster")
    finally:
        waiter.cancel()
        if not bot.is_closed():
            await bot.close()
        if not runner.done():
            try:
                await asyncio.wait_for(runner, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                runner.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
