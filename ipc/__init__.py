"""Coordination between clusters over Redis: the bus, identify queue, shared limits and caches.

Modules
-------
``keys``
    Every key and channel name, under ``INNKEEPER_REDIS_PREFIX``.
``messages``, ``registry``, ``bus``, ``pubsub``
    Typed msgpack messages; the registry of allowed actions; request/response and
    broadcast-gather over pub/sub; a subscriber that reconnects with backoff.
``handlers``, ``cli``
    The standard actions a cluster answers (``ping``, ``guild_count``, ``shard_status``,
    ``reload_extension``, ``cache_invalidate``) and ``innkeeper reload``.
``ratelimit``, ``ratelimit_scripts``, ``rest_hook``
    Shared REST buckets, the pre-emptive global limit and the invalid-request guard (Lua), and
    their plug-in into discord.py's HTTP path.
``cache``, ``snapshots``
    The shared cache with its local layer, and guild snapshots for resume.
``throttle``
    Command throttles per user, guild, channel or bot-wide.
``identify``, ``heartbeat``, ``sessions``
    The identify queue, cluster heartbeats and gateway sessions (cluster runtime).

Wiring a cluster process (one ``redis.asyncio.Redis`` with ``decode_responses=False``; give it a
pool big enough for every component, e.g. ``max_connections=200``)::

    keys = Keys(settings.redis_prefix)
    limiter = SharedRateLimiter.from_settings(redis, keys, settings)
    install(bot, limiter)                        # in ClusterBot.__init__: before login
    cache = SharedCache(redis, keys)             # start() / stop() as a bot service
    registry = HandlerRegistry()
    register_bot_handlers(registry, bot, cache=cache)
    bus = Bus(redis, keys, cluster_id, registry=registry)   # start(retry=True) / stop() as a bot service
    throttle = RedisThrottle(redis, keys)        # the command pipeline passes each command's rule
    snapshots = GuildSnapshotStore(redis, keys)  # save_many() periodically, load_shard() on resume

``shard.bot.ClusterBot`` does exactly this (the bus, the cache's subscription and the snapshots run
as ``shard.ipc_service.IPCService``); ``start(retry=True)`` lets a cluster whose Redis is down at
start-up run on and join the bus when Redis answers.
"""
