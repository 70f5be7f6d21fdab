"""Coordination between clusters over Redis: the bus, identify queue, shared limits and caches.

This package knows Redis and msgpack, and nothing of discord.py, the bot or the database
(``tests/test_layers.py`` holds it to that). The discord.py glue lives in ``shard/``.

Modules
-------
``keys``
    Every key and channel name, under ``INNKEEPER_REDIS_PREFIX``.
``messages``, ``registry``, ``bus``, ``pubsub``
    Typed msgpack messages; the registry of allowed actions; request/response and
    broadcast-gather over pub/sub; a subscriber that reconnects with backoff.
``ratelimit``, ``ratelimit_lease``, ``ratelimit_rounds``, ``ratelimit_scripts``, ``ratelimit_headers``
    Shared REST buckets, the pre-emptive global limit and the invalid-request guard: the limiter,
    the leases a cluster spends locally, its round trips to Redis, the Lua scripts, and the
    parsing of Discord's rate-limit headers.
``cache``, ``snapshots``
    The shared cache with its local layer, and guild snapshots for resume.
``throttle``
    Sliding-log throttles per user, guild, channel or bot-wide.
``identify``, ``heartbeat``, ``sessions``
    The identify queue and budget, cluster heartbeats and gateway sessions.

A cluster process (``shard/assembly.py``) builds one ``redis.asyncio.Redis`` with
``decode_responses=False`` and a pool big enough for every component, and hands it with one
:class:`~ipc.keys.Keys` to each of these.
"""
