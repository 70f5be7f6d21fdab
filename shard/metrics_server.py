"""Prometheus ``/metrics`` of one cluster process, on ``INNKEEPER_METRICS_PORT_BASE + cluster_id``.

Per-shard figures are read from the :class:`~shard.tracker.ShardTracker` at scrape time by a
custom collector, so the gateway's hot path pays nothing for them. The process-wide
``innkeeper_*`` metrics that modules declare on prometheus_client's default registry (rate limits,
bus, cache, commands, database, identify waits) are relayed onto the same page
(:class:`DefaultRegistryRelay`). With
``INNKEEPER_METRICS_PORT_BASE=0`` each cluster takes a free port; the heartbeat reports the port
in use either way, and the status service lists them. A port that is taken is logged and the
cluster runs on without ``/metrics``: metrics must never stop the bot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .tracker import ShardTracker

__all__ = ("ClusterMetrics", "ShardCollector", "DefaultRegistryRelay")

_log = logging.getLogger(__name__)


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


class ShardCollector(Collector):
    """Shard and gateway figures, read from the tracker on every scrape."""

    def __init__(self, tracker: ShardTracker, cluster_id: int) -> None:
        self.tracker = tracker
        self.cluster = str(cluster_id)

    def collect(self) -> Iterator[Metric]:
        t = self.tracker
        labels = ["cluster", "shard"]
        up = GaugeMetricFamily("innkeeper_shard_up", "1 when the shard is READY", labels=labels)
        state = GaugeMetricFamily("innkeeper_shard_state", "1 for the shard's current state",
                                  labels=[*labels, "state"])
        latency = GaugeMetricFamily("innkeeper_gateway_latency_seconds",
                                    "Heartbeat round trip of the shard's gateway connection", labels=labels)
        guilds = GaugeMetricFamily("innkeeper_shard_guilds", "Guilds on the shard", labels=labels)
        identifies = CounterMetricFamily("innkeeper_shard_identifies", "IDENTIFYs sent", labels=labels)
        reconnects = CounterMetricFamily("innkeeper_shard_reconnects", "Gateway disconnects", labels=labels)
        resumes = CounterMetricFamily("innkeeper_shard_resumes", "Sessions RESUMED", labels=labels)
        guild_counts = t.guilds_by_shard()
        for sid, rec in t.shards.items():
            lv = [self.cluster, str(sid)]
            up.add_metric(lv, 1.0 if rec.state == "READY" else 0.0)
            state.add_metric([*lv, rec.state], 1.0)
            lat = t.latency_s(sid)
            if lat is not None:
                latency.add_metric(lv, lat)
            guilds.add_metric(lv, guild_counts.get(sid, 0))
            identifies.add_metric(lv, rec.identifies)
            reconnects.add_metric(lv, rec.reconnects)
            resumes.add_metric(lv, rec.resumes)
        events = CounterMetricFamily("innkeeper_gateway_events", "Gateway dispatch events received, by type",
                                     labels=["cluster", "type"])
        for name, count in sorted(t.events_by_type.items()):
            events.add_metric([self.cluster, name], count)
        blocked = GaugeMetricFamily("innkeeper_identify_blocked", "1 while the identify budget guard holds back",
                                    labels=["cluster"])
        blocked.add_metric([self.cluster], 1.0 if t.blocked_reason else 0.0)
        yield from (up, state, latency, guilds, identifies, reconnects, resumes, events, blocked)


class ClusterMetrics:
    """Serves ``/metrics`` for one cluster.

    Parameters
    ----------
    tracker:
        The cluster's shard tracker.
    cluster_id:
        Label value, and the offset from ``port_base``.
    host:
        ``INNKEEPER_METRICS_HOST``.
    port_base:
        ``INNKEEPER_METRICS_PORT_BASE``; 0 picks a free port.
    """

    __slots__ = ("tracker", "cluster_id", "host", "port_base", "registry", "port", "_runner")

    def __init__(self, tracker: ShardTracker, cluster_id: int, *, host: str, port_base: int) -> None:
        self.tracker = tracker
        self.cluster_id = cluster_id
        self.host = host
        self.port_base = port_base
        self.registry = CollectorRegistry()
        self.registry.register(ShardCollector(tracker, cluster_id))
        self.registry.register(DefaultRegistryRelay())
        ProcessCollector(registry=self.registry)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = self.port_base + self.cluster_id if self.port_base else 0
        site = web.TCPSite(runner, self.host, port)
        try:
            await site.start()
        except OSError as exc:
            _log.error("cannot serve /metrics on %s:%d (%s); this cluster runs without metrics",
                       self.host, port, exc)
            await runner.cleanup()
            return
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self._runner = runner
        _log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.port = None
