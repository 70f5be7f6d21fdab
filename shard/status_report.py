"""What ``/status`` shows: every cluster and its shards, gathered over IPC with graceful fallbacks.

:meth:`StatusReporter.gather` asks, in order:

1. the IPC bus (``broadcast_gather`` of :data:`STATUS_ACTION` to every live cluster): each cluster
   answers with :func:`local_view`; clusters that do not answer in time are listed as *missing*;
2. the clusters' heartbeats in Redis, when the bus is not up in this process;
3. this cluster's own view, when Redis is unreachable too.

The report says which source it came from, so a user sees at once whether it is the whole picture.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ipc.heartbeat import read_heartbeats

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from discord.ext import commands

    from innkeeper.breakers import Breakers
    from ipc.bus import Bus
    from ipc.keys import Keys

    from .tracker import ShardTracker

__all__ = ("ClusterView", "StatusReport", "StatusReporter", "local_view", "render_status", "STATUS_ACTION")

_log = logging.getLogger(__name__)

STATUS_ACTION = "commands.cluster_status"
_STARTED = time.time()


@dataclass(slots=True)
class ClusterView:
    id: int
    state: str
    guilds: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None
    uptime_s: float | None = None
    #: dependency → breaker state (``closed``, ``half-open``, ``open``); empty when unknown.
    breakers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StatusReport:
    source: str  # "ipc", "heartbeats" or "local"
    clusters: list[ClusterView] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def shard_count(self) -> int:
        return sum(len(c.shards) for c in self.clusters)

    @property
    def guilds(self) -> int:
        return sum(c.guilds for c in self.clusters)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.errors


def _latency_ms(value: float) -> float | None:
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value * 1000, 1)


def local_view(bot: commands.AutoShardedBot, tracker: ShardTracker | None, cluster_id: int,
               breakers: Breakers | None = None) -> dict[str, Any]:
    """This cluster's status as plain data (the answer to :data:`STATUS_ACTION`).

    Parameters
    ----------
    bot:
        The cluster's bot (its guilds and shards).
    tracker:
        The cluster's shard states, or None (then states are read off discord.py's shards).
    cluster_id:
        This cluster's id.
    breakers:
        The cluster's circuit breakers, or None.
    """
    if tracker is not None:
        shards = [{"id": b["id"], "state": b["state"], "latency_ms": b["latency_ms"], "guilds": b["guilds"]}
                  for b in tracker.shard_beats()]
        state = tracker.cluster_state()
    else:
        counts: dict[int, int] = {}
        for g in bot.guilds:
            counts[g.shard_id] = counts.get(g.shard_id, 0) + 1
        shards = [{"id": sid, "state": "DISCONNECTED" if info.is_closed() else "READY",
                   "latency_ms": _latency_ms(info.latency), "guilds": counts.get(sid, 0)}
                  for sid, info in sorted(bot.shards.items())]
        state = "READY" if bot.is_ready() else "STARTING"
    view: dict[str, Any] = {"id": cluster_id, "state": state, "guilds": len(bot.guilds), "shards": shards,
                            "pid": os.getpid(), "uptime_s": round(time.time() - _STARTED, 1)}
    if breakers is not None:
        view["breakers"] = {name: str(b["state"]) for name, b in breakers.describe().items()}
    return view


def _view(data: Any) -> ClusterView:
    breakers = data.get("breakers") or {}
    return ClusterView(id=int(data["id"]), state=str(data["state"]), guilds=int(data["guilds"]),
                       shards=[dict(s) for s in data["shards"]], pid=data.get("pid"), uptime_s=data.get("uptime_s"),
                       breakers={str(k): str(v) for k, v in breakers.items()})


class StatusReporter:
    """Gathers ``/status`` (see the module docstring).

    Parameters
    ----------
    bus:
        The cluster's IPC bus; asked first while it is connected.
    redis, keys:
        Where the clusters' heartbeats are.
    local:
        This cluster's own view (:func:`local_view`), the last resort.
    """

    __slots__ = ("bus", "redis", "keys", "local")

    def __init__(self, *, bus: Bus | None, redis: aioredis.Redis, keys: Keys, local: Callable[[], dict[str, Any]]
                 ) -> None:
        self.bus = bus
        self.redis = redis
        self.keys = keys
        self.local = local

    async def gather(self, *, timeout: float = 3.0) -> StatusReport:
        """Collect the status of every cluster."""
        bus = self.bus
        if bus is not None and bus.connected:
            try:
                gathered = await bus.broadcast_gather(STATUS_ACTION, {}, timeout=timeout)
                report = StatusReport("ipc", missing=sorted(int(m) for m in gathered.missing),
                                      errors={int(k): f"{v.code}: {v.message}" for k, v in gathered.errors.items()})
                for data in gathered.results.values():
                    try:
                        report.clusters.append(_view(data))
                    except (KeyError, TypeError, ValueError) as exc:
                        _log.warning("malformed status answer: %s", exc)
                if report.clusters or report.missing:
                    report.clusters.sort(key=lambda c: c.id)
                    return report
            except Exception as exc:  # the bus failing must not fail /status
                _log.warning("status over IPC failed (%s); using heartbeats", exc)
        try:
            beats = await read_heartbeats(self.redis, self.keys)
            if beats:
                clusters = [ClusterView(id=cid, state=b["state"], guilds=sum(s["guilds"] for s in b["shards"]),
                                        shards=[{"id": s["id"], "state": s["state"], "latency_ms": s["latency_ms"],
                                                 "guilds": s["guilds"]} for s in b["shards"]],
                                        pid=b["pid"], uptime_s=round(time.time() - b["started_at"], 1),
                                        breakers=dict(b.get("breakers") or {}))
                            for cid, b in sorted(beats.items())]
                return StatusReport("heartbeats", clusters)
        except Exception as exc:
            _log.warning("reading heartbeats for /status failed (%s); showing this cluster only", exc)
        return StatusReport("local", [_view(self.local())])


def render_status(report: StatusReport, *, this_cluster: int) -> str:
    """The text ``/status`` sends (one line per cluster; shards summarised)."""
    source = {"ipc": "live answers from every cluster", "heartbeats": "cluster heartbeats (the IPC bus is not up)",
              "local": "this cluster only (Redis is unreachable)"}[report.source]
    lines = [f"**{len(report.clusters)} cluster(s), {report.shard_count} shard(s), {report.guilds} guilds** "
             f"- {source}"]
    for c in report.clusters:
        ready = sum(1 for s in c.shards if s["state"] == "READY")
        lat = [s["latency_ms"] for s in c.shards if s.get("latency_ms") is not None]
        avg = f"{sum(lat) / len(lat):.0f} ms" if lat else "n/a"
        here = " (this one)" if c.id == this_cluster else ""
        tripped = ", ".join(f"{name} {state}" for name, state in sorted(c.breakers.items()) if state != "closed")
        lines.append(f"cluster {c.id}{here}: {c.state}, shards {ready}/{len(c.shards)} ready "
                     f"[{', '.join(str(s['id']) for s in c.shards)}], {c.guilds} guilds, latency {avg}"
                     + (f", breakers: {tripped}" if tripped else ""))
    for cid in report.missing:
        lines.append(f"cluster {cid}: did not answer in time")
    for cid, err in sorted(report.errors.items()):
        lines.append(f"cluster {cid}: answered with an error ({err})")
    if not report.complete:
        lines.append("Partial result: some clusters are missing above.")
    return "\n".join(lines)
