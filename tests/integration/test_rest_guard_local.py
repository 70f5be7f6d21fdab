"""The per-process invalid-request guard through discord.py's real HTTP path, with no shared guard in charge:
the shared limiter off (``INNKEEPER_SHARED_RATELIMIT=false``) or its Redis unreachable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import discord
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from discord.http import HTTPClient, Route

from innkeeper.backoff import Backoff
from ipc.keys import Keys
from ipc.ratelimit import RequestRefused, SharedRateLimiter
from shard.rest_guard import LocalInvalidGuard
from shard.rest_hook import INTERACTION_CALLBACK_PATH, install

pytestmark = pytest.mark.integration


class RefusingDiscord:
    """Every message send is a 403 (the bot may not post); interaction callbacks are answered."""

    def __init__(self) -> None:
        self.sends = 0
        self.callbacks = 0
        self.app = web.Application()
        self.app.router.add_get("/api/v10/users/@me", self._me)
        self.app.router.add_post("/api/v10/channels/{channel_id}/messages", self._send)
        self.app.router.add_post("/api/v10/interactions/{iid}/{token}/callback", self._callback)

    async def _me(self, request: web.Request) -> web.Response:
        body = {"id": "1", "username": "bot", "discriminator": "0", "global_name": None, "avatar": None, "bot": True}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def _send(self, request: web.Request) -> web.Response:
        self.sends += 1
        body = json.dumps({"message": "Missing Permissions", "code": 50013}).encode()
        return web.Response(body=body, status=403, content_type="application/json")

    async def _callback(self, request: web.Request) -> web.Response:
        self.callbacks += 1
        return web.Response(status=204)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RefusingDiscord]:
    api = RefusingDiscord()
    server = TestServer(api.app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{server.port}/api/v10")
    yield api
    await server.close()


def send() -> Route:  # built after Route.BASE points at the fake
    return Route("POST", "/channels/{channel_id}/messages", channel_id=5)


async def attack(http: HTTPClient, fake: RefusingDiscord, guard: LocalInvalidGuard) -> None:
    for _ in range(guard.hard):
        with pytest.raises(discord.Forbidden):
            await http.request(send(), json={"content": "x"})
    assert fake.sends == guard.hard and guard.count() == guard.hard
    for _ in range(3):
        with pytest.raises(RequestRefused) as info:
            await http.request(send(), json={"content": "x"})
        assert info.value.retry_after > 0
    assert fake.sends == guard.hard  # refused before leaving: nothing more reached Discord
    # an interaction callback still goes out (refusing it would fail the user's command)
    await http.request(Route("POST", INTERACTION_CALLBACK_PATH, webhook_id=1, webhook_token="t"), json={"type": 1})
    assert fake.callbacks == 1


async def test_with_the_shared_limiter_off_the_process_guard_refuses(fake: RefusingDiscord) -> None:
    guard = LocalInvalidGuard(soft=3, hard=6, max_delay=0.01)
    http = HTTPClient(asyncio.get_running_loop())
    install(http, None, guard=guard)
    await http.static_login("token")
    try:
        await attack(http, fake, guard)
    finally:
        await http.close()


async def test_with_redis_down_the_process_guard_refuses(fake: RefusingDiscord, unused_tcp_port: int) -> None:
    redis = aioredis.from_url(f"redis://127.0.0.1:{unused_tcp_port}/0", socket_connect_timeout=0.2)
    limiter = SharedRateLimiter(redis, Keys("guard-down"), op_timeout=0.3, probe_backoff=Backoff(5.0, 5.0))
    guard = LocalInvalidGuard(soft=3, hard=6, max_delay=0.01)
    http = HTTPClient(asyncio.get_running_loop())
    install(http, limiter, guard=guard)
    await http.static_login("token")
    try:
        await attack(http, fake, guard)
        assert not limiter.shared  # the shared limiter stepped aside; the process guard held the line
    finally:
        await http.close()
        await limiter.close()
        await redis.aclose()
