"""Server-side closes follow Discord's close-code table, and RESUME belongs on READY's ``resume_gateway_url``.

``opcodes-and-status-codes.mdx`` ("Gateway Close Event Codes"): 4004 and 4010–4014 are not
reconnectable, 4007 and 4009 mean "start a new session", the others leave the session resumable.
Raw websocket clients against a real :class:`SimulatorServer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
import yarl

from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import TOKEN, Connect, GatewayClient, _config, connector
from tests.support import running_client, wait_for

RESUMABLE = (4000, 4001, 4002, 4003, 4005, 4008)
ENDED = (4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014, 1000)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config(gateway_send_limit=6, resume_buffer=4)) as server:
        yield server


@pytest.fixture
def connect(http: aiohttp.ClientSession, sim: SimulatorServer) -> Connect:
    return connector(http, sim)


async def _resume(connect: Connect, client: GatewayClient) -> dict[str, object]:
    """RESUME ``client``'s session on a new connection; the first thing the server answers."""
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    return await again.recv()


@pytest.mark.parametrize("code", RESUMABLE + ENDED)
async def test_a_server_close_ends_the_session_exactly_when_the_table_says(
        sim: SimulatorServer, connect: Connect, code: int) -> None:
    client = await connect()
    await client.ready((0, 2))
    assert sim.state.gateway.apply_fault("disconnect", 0, resumable=True, code=code) == 1
    assert await client.close_code() == code
    answer = await _resume(connect, client)
    if code in RESUMABLE:
        assert answer["t"] == "RESUMED", answer
        assert sim.state.stats.resumes == 1
    else:
        assert answer["op"] == 9 and answer["d"] is False, answer
        assert sim.state.stats.failed_resumes == 1
    assert sim.state.stats.shards[0].closes[code] == 1


async def _unknown_opcode(client: GatewayClient) -> None:
    await client.send(42, None)


async def _bad_json(client: GatewayClient) -> None:
    await client.ws.send_str("{not json")


async def _second_identify(client: GatewayClient) -> None:
    await client.identify((1, 2))


async def _too_many_payloads(client: GatewayClient) -> None:
    for _ in range(6):  # IDENTIFY was the first of the 6 allowed per window
        await client.send(1, None)


@pytest.mark.parametrize(("trigger", "code"), [
    (_unknown_opcode, 4001), (_bad_json, 4002), (_second_identify, 4005), (_too_many_payloads, 4008),
])
async def test_closes_for_bad_client_input_keep_the_session_resumable(
        sim: SimulatorServer, connect: Connect, trigger: object, code: int) -> None:
    client = await connect()
    await client.ready((0, 2))
    await trigger(client)  # type: ignore[operator]
    assert await client.close_code() == code
    answer = await _resume(connect, client)
    assert answer["t"] == "RESUMED", answer


async def test_resume_with_a_seq_never_sent_closes_4007_and_ends_the_session(
        sim: SimulatorServer, connect: Connect) -> None:
    client = await connect()
    await client.ready((0, 2))
    await client.ws.close(code=4000)  # a resumable drop
    await wait_for(lambda: not sim.state.gateway.live_shards(), message="the session to detach")
    ahead = await connect()
    assert client.seq is not None
    await ahead.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq + 5})
    assert await ahead.close_code() == 4007
    answer = await _resume(connect, client)  # the right seq is too late: the session is gone
    assert answer["op"] == 9 and answer["d"] is False
    assert sim.state.stats.failed_resumes == 2 and sim.state.stats.shards[0].closes[4000] == 1


async def test_resume_from_a_seq_the_buffer_lost_closes_4007(sim: SimulatorServer, connect: Connect) -> None:
    client = await connect()
    _, creates = await client.ready((0, 2))
    assert len(creates) + 1 > sim.config.resume_buffer  # READY's seq 1 is no longer buffered
    await client.ws.close(code=4000)
    await wait_for(lambda: not sim.state.gateway.live_shards(), message="the session to detach")
    stale = await connect()
    await stale.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": 1})
    assert await stale.close_code() == 4007


async def test_resume_belongs_on_the_resume_gateway_url(sim: SimulatorServer, connect: Connect,
                                                         http: aiohttp.ClientSession) -> None:
    stats = sim.state.stats
    client = await connect()
    ready, _ = await client.ready((0, 2))
    resume_url = ready["d"]["resume_gateway_url"]
    assert resume_url == sim.resume_gateway_url and resume_url != sim.gateway_url
    for on_resume_url in (True, False):
        assert sim.state.gateway.apply_fault("disconnect", 0, resumable=True, code=4000) == 1
        assert await client.close_code() == 4000
        query = "?v=10&encoding=json&compress=zlib-stream"
        again = await _connect_to(http, resume_url + query) if on_resume_url else await connect(query)
        await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
        assert (await again.recv())["t"] == "RESUMED"
        assert stats.resumes_off_resume_url == (0 if on_resume_url else 1)
        again.session_id, client = client.session_id, again
    # The resume URL is a gateway URL like the other: a new session may start there too.
    fresh = await _connect_to(http, resume_url + "?v=10&encoding=json")
    await fresh.ready((1, 2))
    assert stats.resumes == 2 and stats.identifies == 2


async def _connect_to(http: aiohttp.ClientSession, url: str) -> GatewayClient:
    ws = await http.ws_connect(url, max_msg_size=0)
    client = GatewayClient(ws, "compress=zlib-stream" in url)
    client.hello = await client.recv()
    assert client.hello["op"] == 10
    return client


async def test_discord_py_starts_a_new_session_after_4009_and_resumes_on_the_resume_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """discord.py resumes after every close it can handle; after 4009 the RESUME is refused and it identifies."""
    config = _config(token="dpy-token", shards=1, max_concurrency=1)
    async with SimulatorServer(config) as sim:
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        client = discord.Client(intents=discord.Intents.default())
        stats, gateway = sim.state.stats, sim.state.gateway
        async with running_client(client, "dpy-token") as task:
            def live() -> bool:
                if task.done():
                    task.result()
                return client.is_ready() and bool(gateway.live_shards())

            await wait_for(live, timeout=60, message="the client's shard to be live")
            assert gateway.apply_fault("disconnect", 0, resumable=True, code=4000) == 1
            await wait_for(lambda: stats.resumes == 1 and live(), timeout=30, message="a RESUME")
            assert stats.resumes_off_resume_url == 0  # discord.py went to READY's resume_gateway_url
            assert gateway.apply_fault("disconnect", 0, resumable=True, code=4009) == 1
            await wait_for(lambda: stats.identifies == 2 and live(), timeout=30, message="a new session")
            assert stats.failed_resumes == 1 and stats.resumes == 1
            assert stats.shards[0].closes[4009] == 1
