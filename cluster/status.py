"""The status service: ``/status.json``, ``/`` (the page), ``/healthz`` and ``/metrics``.

Run by supervisord as ``python -m cluster.status``; it binds ``INNKEEPER_STATUS_HOST`` (127.0.0.1
by default) and ``INNKEEPER_STATUS_PORT`` (8800; 0 picks a free port). Once it listens it writes the
port it got to ``status.port`` in the run directory (:func:`read_status_port` reads it back), so
the launcher and tests can find a service that was started on port 0. When ``INNKEEPER_STATUS_TOKEN``
is set every route but ``/healthz`` needs it in the ``Authorization`` header, as a Bearer token or
as the password of HTTP basic auth (what a browser sends after its prompt); never in the URL
(:mod:`cluster.status_auth`). It reads the plan and the clusters' heartbeats from Redis on every
request; it holds no state of its own.

The launcher gives it only the settings it uses (:data:`SETTINGS_USED`, in
``run/status-settings.json``): no Discord token, no encryption or IPC keys, no database URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from innkeeper.errors import ConfigError
from innkeeper.logs import setup_logging
from innkeeper.port_files import read_port_file, remove_port_file, write_port_file
from innkeeper.settings import Settings
from ipc.keys import Keys

from .plan import Plan
from .state import StatusDoc, health, read_status, stale_after
from .status_auth import authorized, unauthorized
from .status_page import render_page

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ("create_app", "main", "serve", "SETTINGS_KEY", "REDIS_KEY", "KEYS_KEY", "PORT_FILE", "read_status_port",
           "SETTINGS_USED")

_log = logging.getLogger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
REDIS_KEY = web.AppKey("redis", aioredis.Redis)
KEYS_KEY = web.AppKey("keys", Keys)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The file in the run directory that holds the port the status service is listening on.
PORT_FILE = "status.port"
#: The :class:`~innkeeper.settings.Settings` fields the service reads; the launcher passes it these
#: and nothing else (``run/status-settings.json``).
SETTINGS_USED = frozenset({"redis_url", "redis_prefix", "heartbeat_interval_s", "status_host", "status_port",
                           "status_token", "log_format", "log_level", "run_dir"})


class _Summary(Collector):
    """Cluster summary gauges from the status document of the current scrape."""

    def __init__(self) -> None:
        self.doc: StatusDoc | None = None

    def collect(self) -> Iterator[Metric]:
        doc = self.doc
        if doc is None:
            return
        shards = GaugeMetricFamily("innkeeper_status_shards", "Shards by state", labels=["state"])
        clusters = GaugeMetricFamily("innkeeper_status_clusters", "Clusters by state", labels=["state"])
        expected = GaugeMetricFamily("innkeeper_status_shards_expected", "Shards in the plan")
        eps = GaugeMetricFamily("innkeeper_status_cluster_events_per_second", "Gateway events/s per cluster",
                                labels=["cluster"])
        rss = GaugeMetricFamily("innkeeper_status_cluster_rss_bytes", "Resident memory per cluster",
                                labels=["cluster"])
        port = GaugeMetricFamily("innkeeper_status_cluster_metrics_port", "Port of the cluster's /metrics",
                                 labels=["cluster"])
        breakers = GaugeMetricFamily("innkeeper_status_breakers_open",
                                     "Circuit breakers not closed, per cluster and dependency (1 open, 0.5 half-open)",
                                     labels=["cluster", "dependency"])
        crashes = GaugeMetricFamily("innkeeper_status_cluster_crashes",
                                    "Late deaths of the cluster within the crash-loop guard's window",
                                    labels=["cluster"])
        guard_restarts = GaugeMetricFamily("innkeeper_status_cluster_crash_restarts",
                                           "Restarts the crash-loop guard made of the cluster", labels=["cluster"])
        guard_down = GaugeMetricFamily("innkeeper_status_cluster_crash_stopped",
                                       "1 while the crash-loop guard keeps the cluster down (past its cap)",
                                       labels=["cluster"])
        by_shard: dict[str, int] = {}
        by_cluster: dict[str, int] = {}
        for c in doc["clusters"]:
            by_cluster[c["state"]] = by_cluster.get(c["state"], 0) + 1
            for s in c["shards"]:
                by_shard[s["state"]] = by_shard.get(s["state"], 0) + 1
            label = [str(c["id"])]
            if c["events_per_s"] is not None:
                eps.add_metric(label, c["events_per_s"])
            if c["rss_bytes"] is not None:
                rss.add_metric(label, c["rss_bytes"])
            if c["metrics_port"] is not None:
                port.add_metric(label, c["metrics_port"])
            guard = c.get("crash_guard")
            if guard:
                crashes.add_metric(label, guard["crashes"])
                guard_restarts.add_metric(label, guard["restarts"])
                guard_down.add_metric(label, 1.0 if guard["state"] == "stopped" else 0.0)
            for dependency, state in sorted(c.get("breakers", {}).items()):
                breakers.add_metric([str(c["id"]), dependency], 1.0 if state == "open" else 0.5)
        for state, n in sorted(by_shard.items()):
            shards.add_metric([state], n)
        for state, n in sorted(by_cluster.items()):
            clusters.add_metric([state], n)
        expected.add_metric([], doc["shard_count"] or 0)
        yield from (shards, clusters, expected, eps, rss, port, breakers, crashes, guard_restarts, guard_down)
        advice = doc.get("auto_reshard")
        if advice is not None:
            recommended = GaugeMetricFamily("innkeeper_status_shards_recommended",
                                            "The shard count GET /gateway/bot recommended at the last check")
            recommended.add_metric([], advice["recommended"])
            wanted = GaugeMetricFamily("innkeeper_status_reshard_wanted",
                                       "The shard count the auto-reshard wants but has not reached (0: none): "
                                       "with INNKEEPER_AUTO_RESHARD=false, run innkeeper reshard")
            wanted.add_metric([], advice["target"] or 0)
            checked = GaugeMetricFamily("innkeeper_status_gateway_checked_seconds",
                                        "Unix time of the auto-reshard helper's last GET /gateway/bot")
            checked.add_metric([], advice["checked_at"])
            yield from (recommended, wanted, checked)


class _ServiceMetrics:
    __slots__ = ("registry", "requests", "summary")

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("innkeeper_status_requests", "Requests served", ["route", "status"],
                                registry=self.registry)
        self.summary = _Summary()
        self.registry.register(self.summary)


_METRICS_KEY = web.AppKey("metrics", _ServiceMetrics)


@web.middleware
async def _auth_and_count(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    metrics = app[_METRICS_KEY]
    token = app[SETTINGS_KEY].status_token
    if token and route != "/healthz" and not authorized(request, token):
        metrics.requests.labels(route, "401").inc()
        return unauthorized(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.requests.labels(route, str(exc.status)).inc()
        raise
    metrics.requests.labels(route, str(response.status)).inc()
    return response


async def _read(request: web.Request) -> tuple[Plan | None, StatusDoc]:
    app = request.app
    return await read_status(app[REDIS_KEY], app[KEYS_KEY],
                             stale_after_s=stale_after(app[SETTINGS_KEY].heartbeat_interval_s))


async def _status_json(request: web.Request) -> web.Response:
    _, doc = await _read(request)
    return web.json_response(doc, headers={"Cache-Control": "no-store"})


async def _healthz(request: web.Request) -> web.Response:
    plan, doc = await _read(request)
    h = health(doc, plan)
    if h.ok:
        return web.Response(text=f"ok: {h.ready}/{h.expected} shards READY\n")
    lines = [f"unhealthy: {h.ready}/{h.expected} shards READY", *h.problems]
    return web.Response(status=503, text="\n".join(lines) + "\n")


async def _page(request: web.Request) -> web.Response:
    refresh = max(1.0, min(5.0, request.app[SETTINGS_KEY].heartbeat_interval_s / 2))
    return web.Response(text=render_page(refresh), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[_METRICS_KEY]
    _, metrics.summary.doc = await _read(request)
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings, redis: aioredis.Redis | None = None) -> web.Application:
    """Build the service. Without ``redis`` it opens (and closes) its own client from ``REDIS_URL``."""
    app = web.Application(middlewares=[_auth_and_count])
    app[SETTINGS_KEY] = settings
    app[KEYS_KEY] = Keys(settings.redis_prefix)
    app[_METRICS_KEY] = _ServiceMetrics()

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        if redis is not None:
            app[REDIS_KEY] = redis
            yield
            return
        client = aioredis.from_url(settings.redis_url, health_check_interval=30)
        app[REDIS_KEY] = client
        try:
            yield
        finally:
            await client.aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/", _page)
    app.router.add_get("/status.json", _status_json)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


def load_settings(settings_file: Path | None) -> Settings:
    """Settings from the environment, or from the launcher's JSON file of variables when given."""
    if settings_file is None:
        return Settings.from_env()
    try:
        env = json.loads(settings_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the settings file {settings_file}: {exc}", variable="--settings-file") from None
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{settings_file} must hold a JSON object of strings", variable="--settings-file")
    return Settings.from_env(env)


def read_status_port(run_dir: Path) -> int | None:
    """The port the status service of ``run_dir`` listens on, or ``None`` while it has not said yet."""
    return read_port_file(run_dir / PORT_FILE)


async def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT.

    ``port`` 0 binds a free port. The port actually bound is written to :data:`PORT_FILE` in the
    run directory once the service listens, and removed again when it stops.
    """
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    port_file = settings.run_dir / PORT_FILE
    bound: int | None = None
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
        write_port_file(port_file, bound)
        _log.info("status service on http://%s:%d/", host, bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if bound is not None:
            remove_port_file(port_file, bound)
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.status", description="Serve the cluster status page.")
    parser.add_argument("--host", default=None, help="bind address (default INNKEEPER_STATUS_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port (default INNKEEPER_STATUS_PORT)")
    parser.add_argument("--settings-file", type=Path, default=None,
                        help="JSON object of environment variables to use instead of the environment")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.settings_file)
    except ConfigError as exc:
        print(f"status: error: [{exc.code.value}] {exc.message}", file=sys.stderr)
        return 78
    setup_logging(settings.log_format, settings.log_level, role="status")
    try:
        asyncio.run(serve(settings, args.host or settings.status_host,
                          settings.status_port if args.port is None else args.port))
    except OSError as exc:
        _log.critical("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
