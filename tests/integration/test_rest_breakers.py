"""The ``discord_rest`` breaker through discord.py's real HTTP path, and the guards' exemptions for a user's answer.

A fake Discord answers message sends with 503 (discord.py does not retry a 503, so each request is
one attempt) until told to recover. After ``threshold`` of them the breaker opens: sends are refused
before they leave, while interaction callbacks and follow-ups still go out. After ``open_for`` one
probe goes; its success closes the breaker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import discord
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from discord.http import HTTPClient, Route

from innkeeper.breakers import Breakers, BreakerState, DependencyDown
from ipc.ratelimit import RequestRefused
from shard.rest_guard import LocalInvalidGuard
from shard.rest_hook import INTERACTION_CALLBACK_PATH, install
from tests.support import wait_for

pytestmark = pytest.mark.integration

FOLLOW_UP = "/webhooks/{webhook_id}/{webhook_token}"


class FlakyDiscord:
    """Message sends answer ``status`` (503 until ``status`` is set to 200); callbacks and follow-ups always work."""

    def __init__(self) -> None:
        self.status = 503
        self.sends = 0
        self.callbacks = 0
        self.follow_ups = 0
        self.app = web.Application()
        self.app.router.add_get("/api/v10/users/@me", self._me)
        self.app.router.add_post("/api/v10/channels/{channel_id}/messages", self._send)
        self.app.router.add_post("/api/v10/interactions/{iid}/{token}/callback", self._callback)
        self.app.router.add_post("/api/v10/webhooks/{wid}/{token}", self._follow_up)

    @staticmethod
    def _json(body: object, status: int = 200) -> web.Response:
        return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")

    async def _me(self, request: web.Request) -> web.Response:
        return self._json({"id": "1", "username": "bot", "discriminator": "0", "global_name": None, "avatar": None,
                           "bot": True})

    async def _send(self, request: web.Request) -> web.Response:
        self.sends += 1
        if self.status >= 500:
            return self._json({"message": "Service Unavailable", "code": 0}, self.status)
        return self._json({"id": "9"})

    async def _callback(self, request: web.Request) -> web.Response:
        self.callbacks += 1
        return web.Response(status=204)

    async def _follow_up(self, request: web.Request) -> web.Response:
        self.follow_ups += 1
        return self._json({"id": "10"})


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FlakyDiscord]:
    api = FlakyDiscord()
    server = TestServer(api.app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{server.port}/api/v10")
    yield api
    await server.close()


@pytest.fixture
async def client(fake: FlakyDiscord) -> AsyncIterator[tuple[HTTPClient, Breakers, LocalInvalidGuard]]:
    breakers = Breakers(threshold=3, open_for=0.3)
    guard = LocalInvalidGuard(soft=3, hard=6, max_delay=0.01)
    http = HTTPClient(asyncio.get_running_loop())
    install(http, None, guard=guard, breakers=breakers)
    await http.static_login("token")
    try:
        yield http, breakers, guard
    finally:
        await http.close()


def send() -> Route:
    return Route("POST", "/channels/{channel_id}/messages", channel_id=5)


async def answer_user(http: HTTPClient) -> None:
    """What a command's reply takes: the interaction callback, then a follow-up."""
    await http.request(Route("POST", INTERACTION_CALLBACK_PATH, webhook_id=1, webhook_token="t"), json={"type": 5})
    await http.request(Route("POST", FOLLOW_UP, webhook_id=1, webhook_token="t"), json={"content": "hi"})


async def test_5xx_open_the_breaker_which_spares_the_users_answers_then_probes_and_closes(
        fake: FlakyDiscord, client: tuple[HTTPClient, Breakers, LocalInvalidGuard]) -> None:
    http, breakers, _ = client
    rest = breakers["discord_rest"]
    for _ in range(3):
        with pytest.raises(discord.DiscordServerError):
            await http.request(send(), json={"content": "x"})
    assert rest.state is BreakerState.OPEN and fake.sends == 3
    with pytest.raises(DependencyDown) as info:
        await http.request(send(), json={"content": "x"})
    assert info.value.dependency == "discord_rest" and "Discord's API is unreachable" in info.value.user_message
    assert fake.sends == 3  # refused before leaving
    await answer_user(http)  # a callback and a follow-up still go out while it is open
    assert (fake.callbacks, fake.follow_ups) == (1, 1)
    assert rest.state is BreakerState.OPEN  # and their answers did not close it
    fake.status = 200
    await wait_for(lambda: rest.state is BreakerState.HALF_OPEN, timeout=5, message="the breaker half-open")
    await http.request(send(), json={"content": "probe"})
    assert rest.state is BreakerState.CLOSED and fake.sends == 4


async def test_the_guard_never_refuses_callbacks_or_follow_ups(
        fake: FlakyDiscord, client: tuple[HTTPClient, Breakers, LocalInvalidGuard]) -> None:
    http, _, guard = client
    for _ in range(guard.hard):
        guard.record()
    with pytest.raises(RequestRefused):
        await http.request(send(), json={"content": "x"})
    assert fake.sends == 0
    await answer_user(http)  # "the bot is cooling down" reaches the user through these
    assert (fake.callbacks, fake.follow_ups) == (1, 1)
