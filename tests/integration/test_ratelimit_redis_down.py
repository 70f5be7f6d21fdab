"""Redis dies mid-run: requests keep flowing on discord.py's local limits, then sharing resumes.

The test owns a private ``redis-server`` (on a unix socket of its own), kills it with SIGKILL while
clients are sending, and starts it again at the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from discord.http import HTTPClient, Route
from prometheus_client import REGISTRY

from innkeeper.backoff import Backoff
from ipc.keys import Keys
from ipc.ratelimit import SharedRateLimiter
from shard.rest_hook import install
from tests.integration.test_ratelimit_fake import FakeDiscord
from tests.support import PrivateRedis, wait_for

pytestmark = pytest.mark.integration




@pytest.fixture
async def fake_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(bucket_limit=5, bucket_window=1.0, global_rate=50)
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{server.port}/api/v10")
    yield fake
    await server.close()


def gauge() -> float | None:
    return REGISTRY.get_sample_value("innkeeper_ratelimit_shared")


async def test_redis_outage_falls_back_and_recovers(private_redis: PrivateRedis, fake_api: FakeDiscord) -> None:
    private_redis.start()
    keys = Keys("outage")
    redis = aioredis.from_url(private_redis.url, socket_connect_timeout=0.5)
    limiter = SharedRateLimiter(redis, keys, op_timeout=0.5, probe_backoff=Backoff(0.1, 0.3))
    http = HTTPClient(asyncio.get_running_loop())
    install(http, limiter)
    await http.static_login("token")
    sent = 0
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def worker(channel_id: int) -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                await http.request(Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id),
                                   json={"content": "still here"})
                sent += 1
            except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                failures.append(exc)
                return

    workers = [asyncio.create_task(worker(c)) for c in (1, 2, 3)]
    try:
        await wait_for(lambda: sent >= 10, timeout=10, message="requests flowing through the shared limiter")
        assert limiter.shared and gauge() == 1
        assert await redis.hget(keys.rl_route_map(), "POST /channels/{channel_id}/messages") is not None

        private_redis.kill()
        await wait_for(lambda: not limiter.shared, timeout=10, message="fallback to local limiting")
        assert gauge() == 0
        before = sent
        await wait_for(lambda: sent >= before + 10, timeout=10, message="requests flowing while Redis is down")

        private_redis.start()  # same socket, empty: the shared state is learned again
        await wait_for(lambda: limiter.shared, timeout=15, message="shared limiting resumed")
        assert gauge() == 1

        async def relearned() -> bool:
            try:
                return await redis.hget(keys.rl_route_map(), "POST /channels/{channel_id}/messages") is not None
            except Exception:  # noqa: BLE001 - the client may still be reconnecting
                return False

        await wait_for(relearned, timeout=10, message="bucket hash learned again in the new Redis")
        before = sent
        await wait_for(lambda: sent >= before + 10, timeout=10, message="requests flowing after recovery")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), timeout=15)
        await http.close()
        await limiter.close()
        with contextlib.suppress(Exception):
            await redis.aclose()
    assert failures == []
    assert fake_api.total_429 == 0, dict(fake_api.limited)
    # nothing lost: every request the bot made was accepted exactly once
    assert len(fake_api.ok_times) == sent
