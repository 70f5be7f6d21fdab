"""The one place a cluster process is put together: :func:`build_cluster` and :func:`run_cluster`.

Every part receives what it uses in its constructor; nothing finds another part through the bot.
The resources come from the :class:`~shard.context.ClusterContext` (one Redis client, one database
pool), which owns them and closes them last. The services start in this order (after the
extensions load, before the first shard connects) and stop in the reverse order:

====================  ======================================================================
service               what it does
====================  ======================================================================
event-loop lag        probes how late the loop runs (metrics; the query funnel's slow-query log)
hand-over             this process's generation: what it handles while a reshard runs two
                      (reminders, maintenance, snapshots and the command sync run only while
                      its generation handles events, see shard/handover.py)
REST limiter          shared REST buckets, global limit and invalid-request guard (installed
                      before login, with the per-process guard, which acts while Redis is down
                      or the shared limiter is off)
database              connects the pool, or keeps connecting in the background
shared cache          invalidations over pub/sub (guild configuration and aliases are cached through it)
config prefetch       caches the guild configurations each READY payload lists, in batches
IPC bus               answers the cluster's bus actions, asks the others
usage recorder        batched command-usage rows
pipeline              drains its background writes at shutdown
automod               sweeps its repeat counters; at shutdown lets deletes finish and writes
                      its open log windows (notices, audit rows)
lean messages         the loads that parked messages of guilds with an unknown configuration wait for
read gate             pauses gateway reads while too much work waits (never once stopped)
reminders             claims and delivers due reminders
maintenance           retention and the row-binding upgrade, one cluster at a time
snapshots             guild snapshots in Redis
command sync          the cluster of shard 0: the application commands, in the background, only
                      when the tree changed since the last sync, retried with backoff (never fatal)
metrics               this cluster's ``/metrics``
memory trim           glibc's ``malloc_trim`` once READY, then every 30 s: freed heap goes back to the OS
heartbeat             the cluster's record in Redis (and gateway sessions)
watchdog              revives zombie shards, gives up on a dead cluster
identify gate         confirmation tasks of the identify queue
garbage collector     freezes the guild cache once every shard is ready, times every collection
shard tracker         shard states (stopped first: the cluster reports STOPPING at once)
====================  ======================================================================

Redis being down at start-up never stops a cluster: the bus and the cache subscribe in the
background, identifies fall back to local pacing, REST limits to discord.py's own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from db import privacy as db_privacy
from db.crypto import KeyRing
from db.privacy import RetentionPolicy
from db.pseudonyms import Pseudonyms
from db.usage import UsageRecorder
from innkeeper.services import ServiceStack
from ipc.bus import Bus
from ipc.cache import SharedCache
from ipc.ratelimit import SharedRateLimiter
from ipc.registry import HandlerRegistry
from ipc.sessions import SessionStore
from ipc.signing import FrameSigner
from ipc.snapshots import GuildSnapshotStore
from ipc.synced_commands import SyncedCommands
from ipc.throttle import RedisThrottle

from .automod import Automod
from .bot import ClusterBot
from .bus_handlers import register_cluster_handlers
from .channel_access import RefusedTargets
from .cogs import EXTENSIONS
from .command_sync import CommandSync
from .config_prefetch import ConfigPrefetch
from .context import ClusterContext
from .database import DatabaseService
from .early_shed import EarlyShed
from .fair_reader import FairReader
from .gc_policy import CollectorPolicy
from .handover import Handover, WhileActive
from .heartbeat_writer import Heartbeat
from .identify import IdentifyGate
from .lean_messages import LeanMessages
from .maintenance import MaintenanceService
from .memory_trim import MemoryTrim
from .metrics_server import ClusterMetrics
from .parser_filters import ParserFilters
from .pipeline.alias_cache import AliasCache
from .pipeline.core import Pipeline
from .pipeline.deps import CommandDeps
from .pipeline.sinks import AuditToDatabase, ErrorsToDatabase, UsageToDatabase
from .pipeline.store import GuildConfigStore
from .read_gate import ReadGate
from .reminder_service import ReminderService
from .replay_guard import ReplayGuard
from .rest_guard import LocalInvalidGuard
from .rest_hook import install
from .resume import Resumer
from .session_keeper import SessionKeeper
from .snapshots import SnapshotService
from .status_report import StatusReporter, local_view
from .tracker import ShardTracker
from .true_latency import TrueLatency
from .urls import point_discord_at
from .watchdog import Watchdog

__all__ = ("build_cluster", "run_cluster")

_log = logging.getLogger(__name__)


class _Subscribing(Protocol):
    async def start(self, *, retry: bool = False) -> None: ...

    async def stop(self) -> None: ...


class _SubscribeInBackground:
    """Starts a bus or cache so that, with Redis down, it keeps subscribing in the background."""

    __slots__ = ("part",)

    def __init__(self, part: _Subscribing) -> None:
        self.part = part

    async def start(self) -> None:
        await self.part.start(retry=True)

    async def stop(self) -> None:
        await self.part.stop()


def build_cluster(ctx: ClusterContext, *, extensions: Sequence[str] = EXTENSIONS, **bot_options: Any) -> ClusterBot:
    """Build the bot of one cluster process and every service it runs (see the module docstring).

    Parameters
    ----------
    ctx:
        The process's settings, plan and connections.
    extensions:
        Extensions the bot loads.
    bot_options:
        Passed on to :class:`~shard.bot.ClusterBot` (and discord.py).

    Raises
    ------
    ConfigError
        A malformed ``INNKEEPER_ENCRYPTION_KEYS`` or ``INNKEEPER_PSEUDONYM_KEY``, ``dev`` (the public
        encryption key) while ``DISCORD_API_URL`` is not a local simulator, or a missing or malformed
        ``INNKEEPER_IPC_KEYS``.
    """
    s = ctx.settings
    point_discord_at(s.api_url)
    signer = FrameSigner.from_settings(s)  # the bus and the cache's invalidations sign and verify with it
    key_ring = KeyRing.from_settings(s) if s.encryption_keys else None
    if key_ring is None:
        _log.warning("INNKEEPER_ENCRYPTION_KEYS is not set: feedback, reminders and privacy export are off")
    pseudonyms = Pseudonyms.from_settings(s, key_ring) if s.pseudonym_key or key_ring is not None else None
    if pseudonyms is None:
        _log.warning("INNKEEPER_PSEUDONYM_KEY is not set (nor INNKEEPER_ENCRYPTION_KEYS): /privacy delete is off")
    services = ServiceStack()

    # --- the command layer --------------------------------------------------------------------------
    limiter = SharedRateLimiter.from_settings(ctx.redis, ctx.keys, s) if s.shared_ratelimit else None
    database = DatabaseService(ctx.database)
    cache = SharedCache(ctx.redis, ctx.keys, signer=signer)
    guild_config = GuildConfigStore(ctx.database, shared=cache)
    aliases = AliasCache(ctx.database, shared=cache)
    refused = RefusedTargets()  # DMs and channels that refused the bot: reminders and private answers
    usage = UsageRecorder(ctx.database)
    throttle = RedisThrottle(ctx.redis, ctx.keys)
    filters = ParserFilters()  # switchable filters in front of discord.py's parsers (replays, the hand-over)
    replay_guard = ReplayGuard(ctx.redis, ctx.keys, ttl_s=s.session_ttl_s,
                               filters=filters)  # nothing run twice across a crash
    # a reshard: which generation handles each command while two overlap, and runs the background work
    handover = Handover(ctx.redis, ctx.keys, generation=ctx.generation, cluster_id=ctx.cluster_id, filters=filters)
    pipeline = Pipeline(s, cluster_id=ctx.cluster_id, config=guild_config, throttle=throttle,
                        usage=UsageToDatabase(usage), audit=AuditToDatabase(ctx.database),
                        errors=ErrorsToDatabase(ctx.database),
                        erased_since=lambda ids, since: db_privacy.erased_since(ctx.database, ids, since),
                        breakers=ctx.breakers, marks=replay_guard)
    registry = HandlerRegistry()
    bus = Bus(ctx.redis, ctx.keys, ctx.cluster_id, signer=signer, registry=registry)
    tracker = ShardTracker(ctx.shard_ids or range(ctx.shard_count or 1))
    status = StatusReporter(bus=bus, redis=ctx.redis, keys=ctx.keys,
                            local=lambda: local_view(bot, tracker, ctx.cluster_id, ctx.breakers))
    deps = CommandDeps(settings=s, cluster_id=ctx.cluster_id, db=ctx.database, database=database, key_ring=key_ring,
                       pseudonyms=pseudonyms, guild_config=guild_config, aliases=aliases, refused=refused, usage=usage,
                       throttle=throttle,
                       pipeline=pipeline, status=status, ping_redis=ctx.redis.ping, breakers=ctx.breakers)

    # --- the gateway ----------------------------------------------------------------------------------
    async def session_limits() -> Mapping[str, Any]:
        _, _, limits = await bot.http.get_bot_gateway()
        return limits

    # restarts: sessions kept in Redis, resumed by the next process with its guilds rebuilt first
    session_store = SessionStore(ctx.redis, ctx.keys, ttl_s=s.session_ttl_s)
    snapshots = GuildSnapshotStore(ctx.redis, ctx.keys, ttl=max(3600.0, 2 * s.snapshot_interval_s))
    resumer = Resumer(session_store, snapshots, tracker, replay_guard,
                      allowed=handover.is_active) if s.resume_on_restart else None
    sessions = SessionKeeper(tracker, session_store, interval_s=s.session_save_interval_s, active=handover.is_active)
    gate = IdentifyGate(ctx.redis, ctx.keys, tracker, max_concurrency=ctx.max_concurrency,
                        window_s=s.identify_window_s, margin_s=s.identify_margin_s, reserve=s.identify_reserve,
                        session_limits=session_limits)
    bot = ClusterBot(deps=deps, identify=gate, services=services, cluster_id=ctx.cluster_id,
                     shard_ids=ctx.shard_ids, shard_count=ctx.shard_count, extensions=extensions,
                     on_guild_config=lambda gid, cfg: automod.resume(gid, cfg),
                     resumer=resumer, sessions=sessions, **bot_options)
    # automod runs inside the lean filter, on raw payloads; the prefix lookup of the full path hands
    # it the messages whose guild configuration was not cached (on_guild_config above)
    automod = Automod(bot, audit=AuditToDatabase(ctx.database), refused=refused, owner_ids=s.owner_ids,
                      log_window_s=s.automod_log_window_s)
    # before the tracker wraps the parsers, so it still counts the messages the filter drops
    lean = LeanMessages(s.default_prefix, guild_config, automod)
    lean.install(bot)
    early_shed = EarlyShed(lambda: pipeline.admission, reply_timeout=s.reply_timeout_s)
    early_shed.install(bot)  # past capacity, slash commands are answered "busy" unparsed
    FairReader().install(bot)  # each shard's reader yields the loop after 2 ms of backlog
    # heartbeats timed from their send: true latencies, no false "Can't keep up" (discord.py's race)
    TrueLatency(s.gateway_behind_warn_s, tracker.websocket).install(bot)
    reads = ReadGate()  # gateway backpressure: unfinished event tasks, parked messages
    reads.watch(lean.queue)
    reads.install(bot)
    prefetch = ConfigPrefetch(bot, guild_config)
    prefetch.install()  # READY payloads start loading their guilds' configurations
    replay_guard.install(bot)
    tracker.attach(bot)
    filters.install(bot)
    # before login: every REST, webhook and interaction call goes through it
    install(bot, limiter, guard=LocalInvalidGuard.from_settings(s), breakers=ctx.breakers)
    if limiter is None:
        _log.warning("INNKEEPER_SHARED_RATELIMIT is off: REST limits and the invalid-request guard are per process")
    register_cluster_handlers(registry, bot, cache=cache,
                              local_status=lambda: local_view(bot, tracker, ctx.cluster_id, ctx.breakers))
    metrics = ClusterMetrics(tracker, ctx.cluster_id, host=s.metrics_host, port_base=s.metrics_port_base)

    # --- start order (stopped in reverse) ---------------------------------------------------------
    services.add(ctx.loop_lag)
    services.add(handover)  # first: the rest starts knowing what this generation handles
    if limiter is not None:
        services.add(limiter)
    services.add(database)
    services.add(_SubscribeInBackground(cache))
    services.add(prefetch)
    services.add(_SubscribeInBackground(bus))
    services.add(usage)
    services.add(throttle)  # stops after the pipeline: late hits fall back to the process's own throttle
    services.add(pipeline)
    services.add(automod)
    services.add(lean)
    services.add(early_shed)
    services.add(reads)
    # background work runs in one generation at a time: the one handling events now
    services.add(WhileActive(ReminderService(bot, ctx.database, database, key_ring, cluster_id=ctx.cluster_id,
                                             lease=s.reminder_lease_s, refused=refused), handover))
    services.add(WhileActive(MaintenanceService(ctx.database, database, key_ring, RetentionPolicy.from_settings(s),
                                                interval_s=s.retention_interval_s), handover))
    services.add(WhileActive(SnapshotService(bot, snapshots, interval_s=s.snapshot_interval_s), handover))
    if 0 in (ctx.shard_ids or (0,)) and s.sync_commands:  # the cluster of shard 0 syncs the commands, when changed
        services.add(WhileActive(CommandSync(bot.tree, SyncedCommands(ctx.redis, ctx.keys),
                                             retry_s=s.command_sync_retry_s), handover))
    services.add(metrics)
    services.add(MemoryTrim.for_this_process(s.malloc_trim_interval_s, ready=bot.wait_until_ready))
    services.add(Heartbeat(ctx.redis, ctx.keys, tracker, cluster_id=ctx.cluster_id,
                           interval_s=s.heartbeat_interval_s, ttl_s=s.heartbeat_ttl_s,
                           metrics_port=lambda: metrics.port, breakers=ctx.breakers.describe,
                           commands=pipeline.admission.snapshot, generation=ctx.generation,
                           handles=handover.describe))
    services.add(sessions)
    services.add(Watchdog(bot, tracker, give_up=bot.give_up, zombie_after_s=s.zombie_after_s))
    services.add(gate)
    services.add(CollectorPolicy(bot, tracker, freeze=s.gc_freeze))
    services.add(tracker)
    return bot


async def run_cluster(ctx: ClusterContext, token: str, *, extensions: Sequence[str] = EXTENSIONS) -> ClusterBot:
    """Run one cluster until it closes or SIGTERM/SIGINT arrives, closing everything gracefully either way.

    Returns the bot, whose ``fatal_error`` says whether it gave up.

    Raises
    ------
    discord.LoginFailure, discord.ConnectionClosed, discord.PrivilegedIntentsRequired, InnkeeperError
        What ended the bot, for ``python -m shard`` to turn into an exit code.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bot = build_cluster(ctx, extensions=extensions)
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
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await ctx.aclose()
    return bot
