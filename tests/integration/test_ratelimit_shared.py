"""Four discord.py clients ("clusters") share one limiter through Redis against a strict fake Discord.

Each client is a real ``discord.http.HTTPClient`` with the limiter installed by
:func:`shard.rest_hook.install`, so the whole path runs: discord.py's own buckets and retry loop,
our aiohttp trace hooks, the Lua scripts, and the webhook adapter for interaction callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import discord
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from discord.http import HTTPClient, Route
from discord.webhook.async_ import async_context
from prometheus_client import REGISTRY

from innkeeper.errors import UsageError
from ipc.keys import Keys
from ipc.ratelimit import SharedRateLimiter
from shard.rest_hook import install
from tests.integration.test_ratelimit_fake import FakeDiscord

pytestmark = pytest.mark.integration

Clients = Callable[[FakeDiscord, int], Awaitable[list[HTTPClient]]]


@pytest.fixture
async def clients(redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clients]:
    servers: list[TestServer] = []
    made: list[tuple[HTTPClient, SharedRateLimiter, aioredis.Redis]] = []

    async def factory(fake: FakeDiscord, n: int, **options: object) -> list[HTTPClient]:
        server = TestServer(fake.app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{server.port}/api/v10")
        out = []
        for _ in range(n):
            redis = aioredis.from_url(redis_url)
            limiter = SharedRateLimiter(redis, Keys(redis_prefix), global_rate=fake.global_rate, **options)  # type: ignore[arg-type]
            http = HTTPClient(asyncio.get_running_loop())
            install(http, limiter)
            await http.static_login("token")
            made.append((http, limiter, redis))
            out.append(http)
        return out

    yield factory  # type: ignore[misc]
    for http, limiter, redis in made:
        await http.close()
        await limiter.close()
        await redis.aclose()
    for server in servers:
        await server.close()


def _waits(reason: str) -> float:
    """Requests limiters in this process made wait for a token, by reason (bucket, global, guard)."""
    return REGISTRY.get_sample_value("innkeeper_ratelimit_waits_total", {"reason": reason}) or 0.0


async def hammer(http: HTTPClient, channel_ids: list[int], until: float, tasks_per_channel: int = 2) -> int:
    sent = 0

    async def worker(channel_id: int) -> None:
        nonlocal sent
        while time.monotonic() < until:
            await http.request(Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id),
                               json={"content": "hi"})
            sent += 1

    await asyncio.gather(*(worker(c) for c in channel_ids for _ in range(tasks_per_channel)))
    return sent


async def test_four_clusters_share_one_bucket_without_429(clients: Clients) -> None:
    fake = FakeDiscord(bucket_limit=5, bucket_window=1.0, global_rate=50)
    https = await clients(fake, 4)
    seconds = 3.5
    start = time.monotonic()
    await asyncio.gather(*(hammer(h, [111], start + seconds + 0.5, tasks_per_channel=3) for h in https))
    assert fake.total_429 == 0, dict(fake.limited)
    first = min(fake.ok_times)
    served = fake.served_in(first, seconds)
    allowed = 5 * 4  # windows open at ~0, 1, 2 and 3 s: 4 windows of 5
    assert served >= 0.9 * allowed, f"{served} of {allowed} allowed requests in {seconds}s"


async def test_four_clusters_hold_the_global_limit_without_429(clients: Clients) -> None:
    fake = FakeDiscord(bucket_limit=5, bucket_window=1.0, global_rate=50)
    # The limiter grants by Redis time; the fake counts arrivals. Here both run on the test's own
    # event loop, so a loaded machine delays some sends by more than the default 50 ms margin and
    # a window's first requests can arrive late enough to share a window with the next ones. A
    # 250 ms margin absorbs that lag.
    margin = 0.25
    https = await clients(fake, 4, global_margin=margin)
    seconds = 3.5
    start = time.monotonic()
    # 24 channels × 5/s = 120/s of bucket capacity: the 50/s global limit is what binds
    channels = list(range(1000, 1024))
    await asyncio.gather(*(hammer(h, channels, start + seconds + 0.6, tasks_per_channel=1) for h in https))
    assert fake.total_429 == 0, dict(fake.limited)
    first = min(fake.ok_times)
    served = fake.served_in(first, seconds)
    allowed = 50 * math.ceil(seconds / (1.0 + margin))  # the global windows the limiter opens in that time
    assert served >= 0.9 * allowed, f"{served} of {allowed} allowed requests in {seconds}s"


async def test_interaction_callbacks_skip_the_global_limit(clients: Clients) -> None:
    fake = FakeDiscord(bucket_limit=5, bucket_window=1.0, global_rate=5)
    (http,) = await clients(fake, 1)
    session = http._HTTPClient__session  # type: ignore[attr-defined]  # what discord.py's Interaction uses
    channels = [2000 + i for i in range(9)]
    await asyncio.gather(*(http.request(Route("POST", "/channels/{channel_id}/messages", channel_id=c),
                                        json={"content": "x"}) for c in channels))
    # login + 4 messages filled the first second, the other 5 the next: the global window (5 per
    # second) is full now, and a callback must not wait for it
    adapter = async_context.get()
    params = discord.webhook.async_.interaction_response_params(type=4, data={"content": "pong"})
    before = _waits("global")
    await adapter.create_interaction_response(123, "tok", session=session, params=params)
    assert _waits("global") == before  # the callback did not wait
    assert fake.callbacks == 1
    # a message, by contrast, waits for the global window
    await http.request(Route("POST", "/channels/{channel_id}/messages", channel_id=2999), json={"content": "x"})
    assert _waits("global") > before
    assert fake.total_429 == 0


async def test_install_refuses_a_logged_in_client_and_a_second_install(clients: Clients, redis_url: str,
                                                                       redis_prefix: str) -> None:
    fake = FakeDiscord()
    (http,) = await clients(fake, 1)
    redis = aioredis.from_url(redis_url)
    limiter = SharedRateLimiter(redis, Keys(redis_prefix))
    try:
        with pytest.raises(UsageError, match="already installed"):
            install(http, limiter)
        fresh = HTTPClient(asyncio.get_running_loop())
        fresh.token = "x"
        install(fresh, limiter)
        with contextlib.suppress(Exception):
            await fresh.close()
        late = HTTPClient(asyncio.get_running_loop())
        await late.static_login("token")
        try:
            with pytest.raises(UsageError, match="before login"):
                install(late, limiter)
        finally:
            await late.close()
    finally:
        await limiter.close()
        await redis.aclose()
