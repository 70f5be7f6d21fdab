"""Interaction deadlines: the initial response within 3 s, follow-ups and edits for 15 minutes.

``receiving-and-responding.mdx`` ("Responding to an Interaction"). A real :class:`SimulatorServer`
with a hand-moved clock, a raw gateway client that receives INTERACTION_CREATE, and raw HTTP
callbacks and webhook calls, as discord.py sends them (no Authorization header).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import GatewayClient, _config, connector
from tests.support import ManualClock

UNKNOWN_INTERACTION = {"message": "Unknown interaction", "code": 10062}
INVALID_WEBHOOK_TOKEN = {"message": "Invalid Webhook Token", "code": 50027}


class Harness:
    """A simulator on a manual clock, a bot connection that receives interactions, and an HTTP client."""

    def __init__(self, sim: SimulatorServer, clock: ManualClock, http: aiohttp.ClientSession,
                 bot: GatewayClient) -> None:
        self.sim = sim
        self.clock = clock
        self.http = http
        self.bot = bot
        self.app_id = sim.state.world.application_id

    async def inject(self) -> dict[str, Any]:
        """A slash command from a user; the INTERACTION_CREATE the bot got."""
        guild = self.sim.state.world.guilds[0]
        body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
                "user_id": str(guild.member_ids[0]), "name": "ping", "wait": False}
        async with self.http.post(f"{self.sim.url}/_sim/interactions", json=body) as resp:
            assert resp.status == 202, await resp.text()
        while True:
            event = await self.bot.recv()
            if event.get("t") == "INTERACTION_CREATE":
                return event["d"]  # type: ignore[no-any-return]

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.sim.url}/api/v10{path}", json=body) as resp:
            return resp.status, (await resp.json() if resp.status != 204 else None)

    async def callback(self, d: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", f"/interactions/{d['id']}/{d['token']}/callback?with_response=1", body)

    def webhook(self, d: dict[str, Any], tail: str = "") -> str:
        return f"/webhooks/{self.app_id}/{d['token']}{tail}"

    async def report(self, d: dict[str, Any]) -> dict[str, Any]:
        async with self.http.get(f"{self.sim.url}/_sim/interactions/{d['id']}") as resp:
            assert resp.status == 200
            return await resp.json()  # type: ignore[no-any-return]


async def _harness(config: SimConfig) -> AsyncIterator[Harness]:
    clock = ManualClock()
    async with aiohttp.ClientSession() as http, SimulatorServer(config, clock=clock) as sim:
        bot = await connector(http, sim)()
        await bot.ready((0, 1))
        yield Harness(sim, clock, http, bot)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async for harness in _harness(_config(shards=1, max_concurrency=1)):
        yield harness


async def test_an_initial_response_inside_3s_is_taken_once(h: Harness) -> None:
    d = await h.inject()
    h.clock.advance(2.9)
    status, answer = await h.callback(d, {"type": 4, "data": {"content": "Pong!"}})
    assert status == 200 and answer["resource"]["message"]["content"] == "Pong!"
    h.clock.advance(1.0)  # past the deadline, but already answered: the second answer is the problem
    assert await h.callback(d, {"type": 4, "data": {"content": "again"}}) == (
        400, {"message": "Interaction has already been acknowledged.", "code": 40060})
    report = await h.report(d)
    assert report["acknowledged"] and not report["deadline_missed"] and report["late_callbacks"] == 0


async def test_an_initial_response_after_3s_is_unknown_interaction(h: Harness) -> None:
    d = await h.inject()
    h.clock.advance(3.01)
    assert await h.callback(d, {"type": 5}) == (404, UNKNOWN_INTERACTION)
    assert await h.callback(d, {"type": 4, "data": {"content": "still late"}}) == (404, UNKNOWN_INTERACTION)
    assert h.sim.state.stats.late_interaction_callbacks == 2 and h.sim.state.stats.acknowledged == 0
    # The token was invalidated with it: no follow-up can stand in for the missing response.
    status, error = await h.call("POST", h.webhook(d), {"content": "sorry"})
    assert status == 404 and error["code"] == 10015
    report = await h.report(d)
    assert report["deadline_missed"] and not report["acknowledged"] and report["late_callbacks"] == 2


async def test_follow_ups_and_edits_work_for_15_minutes_then_the_token_is_invalid(h: Harness) -> None:
    stats = h.sim.state.stats
    d = await h.inject()
    h.clock.advance(1.0)
    status, answer = await h.callback(d, {"type": 5})  # "thinking…"
    assert status == 200 and answer["interaction"]["response_message_loading"]
    h.clock.advance(899.0 - 1.0)  # 14:59 after the dispatch
    status, first = await h.call("POST", h.webhook(d), {"content": "done"})  # no ?wait: still the message
    assert status == 200 and first["content"] == "done" and first["id"] == answer["resource"]["message"]["id"]
    status, second = await h.call("POST", h.webhook(d, "?wait=true"), {"content": "more"})
    assert status == 200 and second["id"] != first["id"]
    assert (await h.call("PATCH", h.webhook(d, "/messages/@original"), {"content": "edited"}))[0] == 200
    assert (await h.call("GET", h.webhook(d, f"/messages/{second['id']}")))[0] == 200

    h.clock.advance(1.01)  # 15 minutes and a bit
    for method, tail, body in (("POST", "", {"content": "late"}), ("PATCH", "/messages/@original", {"content": "x"}),
                               ("GET", "/messages/@original", None), ("PATCH", f"/messages/{second['id']}",
                                                                       {"content": "y"}),
                               ("DELETE", f"/messages/{second['id']}", None)):
        assert await h.call(method, h.webhook(d, tail), body) == (401, INVALID_WEBHOOK_TOKEN), (method, tail)
    assert stats.expired_interaction_tokens == 5
    report = await h.report(d)  # the control API still knows it (it keeps interactions twice as long)
    assert report["token_expired"] and [f["content"] for f in report["followups"]] == ["done", "more"]
    assert report["original_edits"] == [{"content": "edited"}]


async def test_the_deadlines_are_configurable() -> None:
    config = _config(shards=1, max_concurrency=1, interaction_deadline=10.0, interaction_token_ttl=60.0)
    async for h in _harness(config):
        d = await h.inject()
        h.clock.advance(9.5)
        assert (await h.callback(d, {"type": 4, "data": {"content": "slow but fine"}}))[0] == 200
        assert (await h.call("POST", h.webhook(d), {"content": "follow-up"}))[0] == 200
        h.clock.advance(51.0)
        assert await h.call("POST", h.webhook(d), {"content": "too late"}) == (401, INVALID_WEBHOOK_TOKEN)
        other = await h.inject()
        h.clock.advance(10.5)
        assert await h.callback(other, {"type": 5}) == (404, UNKNOWN_INTERACTION)
