"""An exhausted IDENTIFY budget ends every session and resets the token; ``POST /_sim/token/reset`` recovers.

``gateway.mdx`` ("Identifying"): "Upon hitting this limit, all active sessions for the app will be
terminated, the bot token will be reset". Raw HTTP and websocket clients against a real
:class:`SimulatorServer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import TOKEN, Connect, _config, connector
from tests.support import wait_for

UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config(session_start_total=3, identify_window=0.0)) as server:
        yield server


@pytest.fixture
def connect(http: aiohttp.ClientSession, sim: SimulatorServer) -> Connect:
    return connector(http, sim)


async def rest(http: aiohttp.ClientSession, sim: SimulatorServer, path: str, token: str) -> tuple[int, Any]:
    async with http.get(f"{sim.url}/api/v10{path}", headers={"Authorization": f"Bot {token}"}) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return resp.status, await resp.json()


async def control(http: aiohttp.ClientSession, sim: SimulatorServer, body: Any) -> tuple[int, Any]:
    async with http.post(f"{sim.url}/_sim/token/reset", json=body) as resp:
        return resp.status, await resp.json()


async def test_exhausting_the_budget_ends_every_session_and_resets_the_token(
        http: aiohttp.ClientSession, sim: SimulatorServer, connect: Connect) -> None:
    stats, gateway = sim.state.stats, sim.state.gateway
    live = await connect()
    await live.ready((0, 2))
    dropped = await connect()
    await dropped.ready((1, 2))
    await dropped.ws.close(code=4000)  # a resumable session without a socket
    await wait_for(lambda: gateway.live_shards() == {0: 1}, message="shard 1 to detach")
    other = await connect()
    await other.ready((1, 2))  # the third and last IDENTIFY of the budget
    assert (await rest(http, sim, "/gateway/bot", TOKEN))[1]["session_start_limit"]["remaining"] == 0

    over = await connect()
    await over.identify((0, 2))
    assert await over.close_code() == 4004
    assert await live.close_code() == 4004 and await other.close_code() == 4004  # every live session ends
    assert not gateway.live_shards() and len(gateway.sessions) == 0  # and none stays resumable
    assert stats.identify_budget_exhausted == 1 and stats.token_resets == 1
    assert stats.shards[0].closes[4004] == 1 and stats.shards[1].closes[4004] == 1

    # The old token works nowhere.
    assert await rest(http, sim, "/users/@me", TOKEN) == (401, UNAUTHORIZED)
    assert await rest(http, sim, "/gateway/bot", TOKEN) == (401, UNAUTHORIZED)
    stale = await connect()
    await stale.identify((0, 2))
    assert await stale.close_code() == 4004
    resumer = await connect()
    await resumer.send(6, {"token": TOKEN, "session_id": dropped.session_id, "seq": dropped.seq})
    assert await resumer.close_code() == 4004

    # The operator resets the token in the portal: a new one, the budget full again.
    status, reply = await control(http, sim, {})
    assert status == 200 and reply["token"] != TOKEN and reply["sessions_ended"] == 0
    assert reply["session_start_limit"]["remaining"] == 3 and reply["session_start_limit"]["total"] == 3
    new = reply["token"]
    assert (await rest(http, sim, "/users/@me", new))[0] == 200
    assert (await rest(http, sim, "/users/@me", TOKEN))[0] == 401
    # The sessions of the old token are gone for good, even with the new one.
    resumer = await connect()
    await resumer.send(6, {"token": new, "session_id": live.session_id, "seq": live.seq})
    assert (await resumer.recv())["d"] is False
    fresh = await connect()
    await fresh.identify((0, 2), token=new)
    assert (await fresh.recv())["t"] == "READY"
    assert (await rest(http, sim, "/gateway/bot", new))[1]["session_start_limit"]["remaining"] == 2
    assert stats.token_resets == 2


async def test_a_token_reset_ends_the_sessions_of_the_old_token(
        http: aiohttp.ClientSession, sim: SimulatorServer, connect: Connect) -> None:
    client = await connect()
    await client.ready((0, 2))
    status, reply = await control(http, sim, {"token": "chosen-token", "identify_remaining": 1})
    assert status == 200 and reply["token"] == "chosen-token" and reply["sessions_ended"] == 1
    assert reply["session_start_limit"]["remaining"] == 1
    assert await client.close_code() == 4004
    assert sim.state.gateway.identify_remaining() == 1
    assert (await rest(http, sim, "/users/@me", "chosen-token"))[0] == 200


@pytest.mark.parametrize(("body", "needle"), [
    ({"token": ""}, "token"), ({"token": "has space"}, "whitespace"), ({"token": 5}, "token must be a string"),
    ({"identify_remaining": 4}, "identify_remaining must be between 0 and 3"),
    ({"identify_remaining": "all"}, "identify_remaining must be an integer"),
])
async def test_bad_reset_bodies_are_400s_and_change_nothing(http: aiohttp.ClientSession, sim: SimulatorServer,
                                                            body: dict[str, Any], needle: str) -> None:
    status, reply = await control(http, sim, body)
    assert status == 400 and needle in reply["error"], reply
    assert sim.state.application.token == TOKEN and sim.state.stats.token_resets == 0
    async with http.post(f"{sim.url}/_sim/token/reset", data=b"[1]") as resp:
        assert resp.status == 400
