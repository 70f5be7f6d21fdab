"""``POST /_sim/gateway``: the shard count ``GET /gateway/bot`` recommends changes, as Discord's does for a bot
that grew (the auto-reshard helper's tests use it). Raw HTTP against a real :class:`SimulatorServer`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import TOKEN, _config


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config()) as server:
        yield server


async def _recommended(http: aiohttp.ClientSession, sim: SimulatorServer) -> int:
    async with http.get(f"{sim.url}/api/v10/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}) as resp:
        return int((await resp.json())["shards"])


async def _set(http: aiohttp.ClientSession, sim: SimulatorServer, body: Any) -> tuple[int, Any]:
    async with http.post(f"{sim.url}/_sim/gateway", json=body) as resp:
        return resp.status, await resp.json()


async def test_the_recommended_shard_count_follows_the_control(http: aiohttp.ClientSession,
                                                               sim: SimulatorServer) -> None:
    configured = sim.state.config.shards
    assert await _recommended(http, sim) == configured
    assert await _set(http, sim, {"shards": 24}) == (200, {"shards": 24})
    assert await _recommended(http, sim) == 24
    assert await _set(http, sim, {"shards": None}) == (200, {"shards": configured})
    assert await _recommended(http, sim) == configured
    for bad in ({"shards": 0}, {"shards": "many"}, {"shards": 70_000}):
        status, body = await _set(http, sim, bad)
        assert status == 400 and "shards" in body["error"], (bad, body)
    assert await _recommended(http, sim) == configured
