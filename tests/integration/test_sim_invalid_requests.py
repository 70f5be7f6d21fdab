"""The invalid-request limit: too many 401/403/429 answers ban the IP, with Cloudflare's answer.

``rate-limits.mdx`` ("Invalid Request Limit aka Cloudflare bans"), scaled down: 3 invalid answers
per 600 s, a 60 s ban, on a hand-moved clock. Raw HTTP against a real :class:`SimulatorServer`, and
discord.py's reaction to the ban.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest

from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import TOKEN, _config
from tests.support import ManualClock

GOOD = {"Authorization": f"Bot {TOKEN}"}
BAD = {"Authorization": "Bot wrong"}


class Banned:
    def __init__(self, sim: SimulatorServer, clock: ManualClock, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.clock = clock
        self.http = http

    async def get(self, path: str = "/users/@me", headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        async with self.http.get(f"{self.sim.url}/api/v10{path}", headers=headers or GOOD) as resp:
            await resp.read()
            return resp

    async def control(self, method: str, path: str, body: Any = None) -> int:
        async with self.http.request(method, f"{self.sim.url}/_sim/{path}", json=body) as resp:
            return resp.status


@pytest.fixture
async def b() -> AsyncIterator[Banned]:
    clock = ManualClock()
    config = _config(invalid_request_limit=3, invalid_request_window=600.0, invalid_request_ban=60.0)
    async with aiohttp.ClientSession() as http, SimulatorServer(config, clock=clock) as sim:
        yield Banned(sim, clock, http)


def assert_ban(resp: aiohttp.ClientResponse) -> None:
    assert resp.status == 429 and resp.content_type == "text/html"
    assert "Via" not in resp.headers and int(resp.headers["Retry-After"]) > 0


async def test_one_invalid_answer_past_the_limit_bans_the_ip_until_the_ban_ends(b: Banned) -> None:
    stats = b.sim.state.stats
    for _ in range(4):  # the fourth goes past the limit of 3: it is answered, and the ban starts
        assert (await b.get(headers=BAD)).status == 401
    assert stats.invalid_request_bans == 1 and stats.invalid_requests == 4
    banned = await b.get()  # even a good request, on any route
    assert_ban(banned)
    assert int(banned.headers["Retry-After"]) == 60
    assert_ban(await b.get("/no/such/route"))
    assert stats.banned_requests == 2 and stats.invalid_requests == 4  # the ban itself is not counted again
    assert await b.control("GET", "stats") == 200  # the control API is not Discord's: never banned
    b.clock.advance(59.0)
    assert int((await b.get()).headers["Retry-After"]) == 1
    b.clock.advance(1.0)
    assert (await b.get()).status == 200


async def test_the_window_slides_and_shared_429s_do_not_count(b: Banned) -> None:
    stats = b.sim.state.stats
    for _ in range(3):
        assert (await b.get(headers=BAD)).status == 401
    b.clock.advance(600.0)  # those three are out of the window now
    assert await b.control("POST", "faults", {"kind": "http_error", "status": 429, "scope": "shared",
                                              "count": 5}) == 200
    for _ in range(5):
        resp = await b.get()
        assert resp.status == 429 and resp.headers["X-RateLimit-Scope"] == "shared"
    for _ in range(3):
        assert (await b.get(headers=BAD)).status == 401
    assert (await b.get()).status == 200 and stats.invalid_request_bans == 0
    assert (await b.get(headers=BAD)).status == 401  # the fourth in the window
    assert_ban(await b.get())


async def test_reset_stats_with_rate_limits_lifts_a_ban(b: Banned) -> None:
    for _ in range(4):
        await b.get(headers=BAD)
    assert_ban(await b.get())
    assert await b.control("POST", "reset-stats", {"rate_limits": True}) == 200
    assert (await b.get()).status == 200


async def test_limit_zero_counts_but_never_bans() -> None:
    async with aiohttp.ClientSession() as http, SimulatorServer(_config(invalid_request_limit=0)) as sim:
        for _ in range(20):
            async with http.get(f"{sim.url}/api/v10/users/@me", headers=BAD) as resp:
                assert resp.status == 401
        async with http.get(f"{sim.url}/api/v10/users/@me", headers=GOOD) as resp:
            assert resp.status == 200
        assert sim.state.stats.invalid_requests == 20 and sim.state.stats.invalid_request_bans == 0


async def test_discord_py_raises_at_once_on_a_ban(b: Banned, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(4):
        await b.get(headers=BAD)
    monkeypatch.setattr(discord.http.Route, "BASE", f"{b.sim.url}/api/v10")
    client = discord.Client(intents=discord.Intents.default())
    try:
        with pytest.raises(discord.HTTPException) as info:  # "Banned by Cloudflare more than likely": no retry
            await client.login(TOKEN)
        assert info.value.status == 429 and not isinstance(info.value, discord.RateLimited)
    finally:
        await client.close()
    assert b.sim.state.stats.banned_requests == 1
