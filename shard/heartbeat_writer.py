"""The cluster's heartbeat writer: its record in Redis every few seconds, and soon after any change.

The record (see :mod:`ipc.heartbeat`) carries the cluster's state, RSS, events/s and every
shard's state, latency, guilds and time since its last frame. It is written every
``INNKEEPER_HEARTBEAT_INTERVAL`` seconds with a TTL of ``INNKEEPER_HEARTBEAT_TTL``, and within
:data:`DEBOUNCE_S` of a shard changing state, so the launcher's progress and rolling restarts see
changes at once. On a clean stop the record is deleted: the cluster shows as down at once instead of
after the TTL. (The shards' gateway sessions are kept by :mod:`shard.session_keeper`.)
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from innkeeper.services import BackgroundTasks
from ipc.heartbeat import HEARTBEAT_VERSION, ClusterBeat, CommandLoad, delete_heartbeat, write_heartbeat

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

    from .tracker import ShardTracker

__all__ = ("Heartbeat", "rss_bytes", "DEBOUNCE_S")

_log = logging.getLogger(__name__)

#: Quiet time after a state change before the record is rewritten.
DEBOUNCE_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Heartbeat:
    """Writes one cluster's heartbeat until stopped.

    Parameters
    ----------
    redis, keys:
        Where to write.
    tracker:
        The cluster's shard states.
    cluster_id:
        Names the record.
    interval_s, ttl_s:
        ``INNKEEPER_HEARTBEAT_INTERVAL`` and ``INNKEEPER_HEARTBEAT_TTL``.
    metrics_port:
        Returns the port ``/metrics`` listens on, or None.
    commands:
        Returns the admission's figures (running, queued, deferred, shed), or None to leave them out.
    breakers:
        Returns the cluster's circuit breakers (:meth:`innkeeper.breakers.Breakers.describe`), or None.
    generation, handles:
        The process's generation, and what it handles now (:meth:`shard.handover.Handover.describe`).
    """

    __slots__ = ("redis", "keys", "tracker", "cluster_id", "interval_s", "ttl_s", "metrics_port", "commands",
                 "breakers", "host", "pid", "started_at", "_tasks", "_samples", "writes", "last_error",
                 "generation", "handles")

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        tracker: ShardTracker,
        *,
        cluster_id: int,
        interval_s: float,
        ttl_s: float,
        metrics_port: Callable[[], int | None] = lambda: None,
        commands: Callable[[], CommandLoad] | None = None,
        breakers: Callable[[], dict[str, dict[str, Any]]] | None = None,
        generation: int = 0,
        handles: Callable[[], str] | None = None,
    ) -> None:
        self.generation = generation
        self.handles = handles
        self.redis = redis
        self.keys = keys
        self.tracker = tracker
        self.cluster_id = cluster_id
        self.interval_s = interval_s
        self.ttl_s = max(ttl_s, interval_s * 2)
        self.metrics_port = metrics_port
        self.commands = commands
        self.breakers = breakers
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self._tasks = BackgroundTasks("heartbeat")
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self.writes = 0
        self.last_error: str | None = None

    def events_per_s(self) -> float:
        """Gateway events per second over the last ~10 s."""
        now = time.monotonic()
        total = self.tracker.total_events
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > 10.0:
            self._samples.popleft()
        t0, n0 = self._samples[0]
        return round((total - n0) / (now - t0), 2) if now - t0 > 0.5 else 0.0

    def record(self) -> ClusterBeat:
        beat: ClusterBeat = {
            "v": HEARTBEAT_VERSION, "cluster_id": self.cluster_id, "host": self.host, "pid": self.pid,
            "started_at": self.started_at, "written_at": time.time(), "state": self.tracker.cluster_state(),
            "rss_bytes": rss_bytes(), "events_per_s": self.events_per_s(), "metrics_port": self.metrics_port(),
            "identify_blocked_reason": self.tracker.blocked_reason, "shards": self.tracker.shard_beats(),
        }
        if self.commands is not None:
            beat["commands"] = self.commands()
        beat["generation"] = self.generation
        if self.handles is not None:
            beat["handles"] = self.handles()
        if self.breakers is not None:
            beat["breakers"] = {name: str(b["state"]) for name, b in self.breakers().items()}
        return beat

    async def beat(self) -> None:
        """Write the record now."""
        await write_heartbeat(self.redis, self.keys, self.record(), self.ttl_s)
        self.writes += 1

    async def _write(self) -> None:
        await self.beat()
        if self.last_error is not None:
            _log.info("heartbeat writes work again")
        self.last_error = None

    def _write_failed(self, exc: Exception) -> None:  # Redis down: keep trying, say so once
        if self.last_error is None:
            _log.error("cannot write the heartbeat: %s", exc)
        self.last_error = str(exc)

    async def start(self) -> None:
        if not len(self._tasks):
            self._tasks.every(self.interval_s, self._write, name="write", wake=self.tracker.changed,
                              debounce_s=DEBOUNCE_S, on_error=self._write_failed)

    async def stop(self) -> None:
        """Stop writing and delete the record."""
        await self._tasks.cancel()
        try:
            await delete_heartbeat(self.redis, self.keys, self.cluster_id)
        except Exception as exc:  # the TTL removes it anyway
            _log.warning("could not delete the heartbeat on stop: %s", exc)
