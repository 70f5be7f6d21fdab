"""The status service's routes, against a real Redis, through aiohttp's test client."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from cluster.launcher import Launcher
from cluster.plan import plan
from cluster.render import status_settings_json
from cluster.state import store_plan
from cluster.status import SETTINGS_USED, create_app, read_status_port
from innkeeper.settings import Settings
from ipc.heartbeat import ClusterBeat, write_heartbeat
from ipc.keys import Keys
from tests.procs import spawn
from tests.support import wait_for_sync
from tests.unit.test_cluster_status_doc import beat as old_beat
from tests.unit.test_cluster_status_doc import shard

pytestmark = pytest.mark.integration


def beat(*args: Any, **kwargs: Any) -> ClusterBeat:
    """A heartbeat written just now (the status service ignores stale ones)."""
    b = old_beat(*args, **kwargs)
    b["written_at"], b["started_at"] = time.time(), time.time() - 60
    return b


async def _client(redis: aioredis.Redis, prefix: str, **env: str) -> TestClient:  # type: ignore[type-arg]
    settings = Settings.from_env({"INNKEEPER_REDIS_PREFIX": prefix, **env})
    client = TestClient(TestServer(create_app(settings, redis)))
    await client.start_server()
    return client


@pytest.fixture
async def seeded(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[Keys]:
    keys = Keys(redis_prefix)
    await store_plan(redis, keys, plan(8, 2, clusters=2))
    await write_heartbeat(redis, keys, beat(0, [shard(i) for i in range(4)]), ttl_s=30)
    await write_heartbeat(redis, keys, beat(1, [shard(4), shard(5, "IDENTIFYING"), shard(6), shard(7)],
                                                    state="STARTING"), ttl_s=30)
    yield keys


async def test_routes(redis: aioredis.Redis, redis_prefix: str, seeded: Keys) -> None:
    client = await _client(redis, redis_prefix)
    try:
        r = await client.get("/status.json")
        assert r.status == 200
        doc = await r.json()
        assert doc["shard_count"] == 8 and doc["max_concurrency"] == 2
        assert [c["state"] for c in doc["clusters"]] == ["READY", "STARTING"]
        assert doc["clusters"][0]["uptime_s"] == pytest.approx(60, abs=5)
        assert doc["clusters"][1]["shards"][1]["state"] == "IDENTIFYING"

        r = await client.get("/healthz")
        assert r.status == 503
        text = await r.text()
        assert "7/8 shards READY" in text and "shard 5 IDENTIFYING (cluster-1)" in text

        await write_heartbeat(redis, seeded, beat(1, [shard(i) for i in range(4, 8)]), ttl_s=30)
        r = await client.get("/healthz")
        assert r.status == 200 and "8/8" in await r.text()

        r = await client.get("/")
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        assert "status.json" in page and "<script>" in page and "http" not in page.split("<script>")[1]

        r = await client.get("/metrics")
        assert r.status == 200
        body = await r.text()
        assert 'innkeeper_status_shards{state="READY"} 8.0' in body
        assert 'innkeeper_status_cluster_metrics_port{cluster="1"} 9101.0' in body
        assert 'innkeeper_status_requests_total{route="/healthz",status="503"} 1.0' in body
    finally:
        await client.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_token_guards_every_route_but_healthz(redis: aioredis.Redis, redis_prefix: str,
                                                    seeded: Keys) -> None:
    client = await _client(redis, redis_prefix, INNKEEPER_STATUS_TOKEN="s3cret")
    try:
        for path in ("/", "/status.json", "/metrics"):
            r = await client.get(path)
            assert r.status == 401, path
            # a browser gets a Basic challenge (it prompts), a script learns about Bearer
            challenges = r.headers.getall("WWW-Authenticate")
            assert any(c.startswith("Basic ") for c in challenges) and any(c.startswith("Bearer") for c in challenges)
            assert (await client.get(path, headers={"Authorization": "Bearer nope"})).status == 401
            assert (await client.get(path, headers={"Authorization": "Bearer s3cret"})).status == 200
            assert (await client.get(path, headers=_basic("anyone", "s3cret"))).status == 200
            assert (await client.get(path, headers=_basic("", "s3cret"))).status == 200
            assert (await client.get(path, headers=_basic("s3cret", "nope"))).status == 401
            assert (await client.get(path, headers={"Authorization": "Basic !!not base64"})).status == 401
        assert (await client.get("/healthz")).status == 503  # open, and honest
        assert (await client.get("/nope", headers={"Authorization": "Bearer s3cret"})).status == 404
    finally:
        await client.close()


async def test_a_token_in_the_url_is_refused(redis: aioredis.Redis, redis_prefix: str, seeded: Keys) -> None:
    """A token in the query string ends up in logs and browser history: it is never accepted."""
    client = await _client(redis, redis_prefix, INNKEEPER_STATUS_TOKEN="s3cret")
    try:
        for path in ("/", "/status.json", "/metrics"):
            r = await client.get(path, params={"token": "s3cret"})
            assert r.status == 401, path
            assert "not accepted in the URL" in (await r.json())["error"]
        page = await (await client.get("/", headers=_basic("me", "s3cret"))).text()
        assert "token" not in page.lower()  # the page never puts a token in a URL it fetches
    finally:
        await client.close()


async def test_no_plan_is_unhealthy(redis: aioredis.Redis, redis_prefix: str) -> None:
    client = await _client(redis, redis_prefix)
    try:
        r = await client.get("/healthz")
        assert r.status == 503 and "no plan" in await r.text()
        doc = await (await client.get("/status.json")).json()
        assert doc == {"clusters": [], "shard_count": None, "max_concurrency": None}
    finally:
        await client.close()


async def test_stale_heartbeat_is_unhealthy(redis: aioredis.Redis, redis_prefix: str, seeded: Keys) -> None:
    stale = beat(0, [shard(i) for i in range(4)])
    stale["written_at"] = time.time() - 30  # INNKEEPER_HEARTBEAT_INTERVAL 5 s: two writes missed
    await write_heartbeat(redis, seeded, stale, ttl_s=30)
    await write_heartbeat(redis, seeded, beat(1, [shard(i) for i in range(4, 8)]), ttl_s=30)
    client = await _client(redis, redis_prefix)
    try:
        r = await client.get("/healthz")
        assert r.status == 503 and "cluster-0 STALE" in await r.text()
        doc = await (await client.get("/status.json")).json()
        assert doc["clusters"][0]["state"] == "STALE"
    finally:
        await client.close()


SECRETS = {"DISCORD_TOKEN": "discord-token-xyz", "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_IPC_KEYS": "dev",
           "DATABASE_URL": "postgresql://bot:db-password-xyz@127.0.0.1:5432/innkeeper"}


async def test_port_zero_binds_a_free_port_and_says_which(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    """``INNKEEPER_STATUS_PORT=0``: the service binds a port itself and writes it to ``status.port`` in the run dir.

    It runs on the settings file the launcher writes, which holds what the service uses and no secret.
    """
    run_dir = tmp_path / "run"
    settings_file = tmp_path / "status-settings.json"
    full = Settings.from_env({"INNKEEPER_RUN_DIR": str(run_dir), "INNKEEPER_STATUS_PORT": "0", "REDIS_URL": redis_url,
                              "INNKEEPER_REDIS_PREFIX": redis_prefix, **SECRETS})
    text = status_settings_json(full)
    written = json.loads(text)
    assert set(written) == {Settings.variable(f) for f in SETTINGS_USED if getattr(full, f) is not None}
    for name, value in SECRETS.items():
        assert name not in written and value not in text
    settings_file.write_text(text)
    proc = spawn("status", ["-m", "cluster.status", "--settings-file", str(settings_file)], tmp_path)
    try:
        def bound() -> int | None:
            assert proc.alive(), proc.output()
            return read_status_port(run_dir)

        port = await asyncio.to_thread(wait_for_sync, bound, timeout=30, message="status.port")
        launcher = Launcher(Settings.from_env({"INNKEEPER_RUN_DIR": str(run_dir), "INNKEEPER_STATUS_PORT": "0"}))
        assert launcher.status_url == f"http://127.0.0.1:{port}/"
        async with aiohttp.ClientSession() as http, http.get(f"{launcher.status_url}healthz") as r:
            assert r.status == 503 and "no plan" in await r.text()
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.popen.wait, 15) == 0, proc.output()
        assert read_status_port(run_dir) is None  # a clean stop takes its port file with it
    finally:
        proc.stop(signal.SIGKILL)
