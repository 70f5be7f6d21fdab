"""Every Redis key and channel name Innkeeper uses, under one prefix.

Nothing else in the code base writes a key name by hand: it asks a :class:`Keys` built from
``Settings.redis_prefix`` (``INNKEEPER_REDIS_PREFIX``). Tests and several bots can therefore share
one Redis by using different prefixes.
"""

from __future__ import annotations

__all__ = ("Keys",)


class Keys:
    """Key and channel names under one prefix.

    Parameters
    ----------
    prefix:
        The namespace, e.g. ``"innkeeper"``; keys look like ``innkeeper:identify:0``.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip(":")

    def _k(self, *parts: object) -> str:
        return ":".join((self.prefix, *(str(p) for p in parts)))

    # --- identify queue -------------------------------------------------------------------------
    def identify_bucket(self, bucket: int) -> str:
        """Lock held for one identify window by the shard identifying in ``bucket``."""
        return self._k("identify", "bucket", bucket)

    def identify_queue(self, bucket: int) -> str:
        """Sorted set of shards waiting to identify in ``bucket``."""
        return self._k("identify", "queue", bucket)

    def identify_leases(self, bucket: int) -> str:
        """Hash: waiting shard id → lease deadline (ms); a waiter that stops renewing is dropped."""
        return self._k("identify", "leases", bucket)

    def identify_budget(self) -> str:
        """Last known ``session_start_limit`` (hash)."""
        return self._k("identify", "budget")

    def cold_start(self) -> str:
        """When (Redis ms) the launcher last started the clusters all at once; expires after the cold start."""
        return self._k("identify", "cold-start")

    # --- cluster liveness -----------------------------------------------------------------------
    def heartbeat(self, cluster_id: int) -> str:
        """The cluster's heartbeat record (msgpack), expiring by TTL."""
        return self._k("cluster", cluster_id, "heartbeat")

    def heartbeat_pattern(self) -> str:
        return self._k("cluster", "*", "heartbeat")

    def plan(self) -> str:
        """The current cluster plan (msgpack), written by the launcher."""
        return self._k("cluster", "plan")

    def generations(self) -> str:
        """Hash: which generation of clusters is active, the one being brought up, and the switch instant
        (``ipc/generations.py``, a zero-downtime reshard)."""
        return self._k("cluster", "generations")

    def generation_acks(self) -> str:
        """Hash: ``generation:cluster`` → the reshard state that cluster process last applied."""
        return self._k("cluster", "generations", "acks")

    def gateway_advice(self) -> str:
        """Hash: the shard count Discord last recommended, when, and what the auto-reshard made of it."""
        return self._k("cluster", "gateway-advice")

    def crash_guard(self, cluster_id: int) -> str:
        """The crash-loop guard's record of one cluster (JSON): recent crashes, a pending restart, why it is down."""
        return self._k("cluster", cluster_id, "crash-guard")

    def crash_guard_pattern(self) -> str:
        return self._k("cluster", "*", "crash-guard")

    # --- gateway sessions -----------------------------------------------------------------------
    def session(self, shard_id: int) -> str:
        """session_id, seq and resume_gateway_url of one shard (hash)."""
        return self._k("session", shard_id)

    # --- application commands -------------------------------------------------------------------
    def commands_synced(self) -> str:
        """Hash (hex) of the application command payload last synced to Discord (``shard/command_sync.py``)."""
        return self._k("commands", "synced")

    # --- IPC bus --------------------------------------------------------------------------------
    def bus_channel(self) -> str:
        """Broadcast channel every cluster subscribes to."""
        return self._k("bus", "all")

    def bus_cluster_channel(self, cluster_id: int | str) -> str:
        """Channel for messages addressed to one cluster (or to the CLI/status service by name)."""
        return self._k("bus", "to", cluster_id)

    # --- REST rate limits -----------------------------------------------------------------------
    def rl_bucket(self, bucket: str) -> str:
        return self._k("rl", "bucket", bucket)

    def rl_route_map(self) -> str:
        """Hash: route key → Discord bucket hash, learned from ``X-RateLimit-Bucket``."""
        return self._k("rl", "routes")

    def rl_global(self) -> str:
        """Sorted set: one entry per granted global slot, stamped at its latest possible send (ms)."""
        return self._k("rl", "global")

    def rl_global_block(self) -> str:
        """Until when (Redis ms) a global 429 blocks every request; expires by itself."""
        return self._k("rl", "global", "block")

    def rl_bucket_prefix(self) -> str:
        """What :meth:`rl_bucket` puts before a bucket id; the Lua scripts append ids to it."""
        return self._k("rl", "bucket", "")

    def rl_bucket_inflight(self, bucket: str) -> str:
        """Sorted set: tokens granted from ``bucket`` and not yet settled, leased or unanswered (score: deadline)."""
        return self.rl_bucket(bucket) + ":inflight"

    def rl_invalid(self) -> str:
        """Counter of 401/403/429 responses in the current 10-minute window."""
        return self._k("rl", "invalid")

    # --- caches and throttles -------------------------------------------------------------------
    def cache(self, namespace: str, key: str) -> str:
        return self._k("cache", namespace, key)

    def cache_generation(self, namespace: str, key: str) -> str:
        """Counter incremented by every invalidation of :meth:`cache` (``ipc/cache_versions.py``)."""
        return self._k("cachegen", namespace, key)

    def cache_channel(self) -> str:
        """Pub/sub channel carrying cache invalidations."""
        return self._k("cache", "invalidate")

    def guild_snapshot(self, guild_id: int) -> str:
        return self._k("snapshot", "guild", guild_id)

    def shard_snapshot_index(self, shard_id: int) -> str:
        """Set of guild ids snapshotted for one shard."""
        return self._k("snapshot", "shard", shard_id)

    def handled_events(self, shard_id: int) -> str:
        """Sorted set of the message and interaction ids one shard's commands started on (score: ms), for
        a restarted process not to run them again when a RESUME replays them."""
        return self._k("handled", shard_id)

    def throttle(self, scope: str, subject: str, command: str) -> str:
        return self._k("throttle", scope, subject, command)

    # --- jobs -----------------------------------------------------------------------------------
    def lock(self, name: str) -> str:
        return self._k("lock", name)
