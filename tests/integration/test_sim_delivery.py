"""What the bot really received, over real sockets: buffered events of a session that is never resumed
count as lost once its resume window ends, a RESUME counts them replayed, a silent socket is a zombie,
and overlapping generations each get their guilds' events.

Raw websocket clients against an in-process :class:`SimulatorServer`; ``GET /_sim/stats`` is read
over HTTP, as a benchmark reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import TOKEN, Connect, GatewayClient, _config, connector
from tests.support import wait_for

pytestmark = pytest.mark.integration

WINDOW = 0.6


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config(resume_ttl=WINDOW)) as server:
        yield server


@pytest.fixture
def connect(http: aiohttp.ClientSession, sim: SimulatorServer) -> Connect:
    return connector(http, sim)


async def _stats(http: aiohttp.ClientSession, sim: SimulatorServer) -> dict[str, Any]:
    async with http.get(sim.url + "/_sim/stats") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


def _session(stats: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    [found] = [s for s in stats["sessions"] if s["session_id"] == session_id]
    return found


async def _drop(sim: SimulatorServer, client: GatewayClient) -> None:
    """Close the client's socket with 4000 (resumable) and wait until the server has detached its session."""
    await client.ws.close(code=4000)
    await wait_for(lambda: not any(s.session_id == client.session_id and s.live for s in sim.state.gateway.sessions),
                   message="the session to detach")


async def _guild_of_shard(sim: SimulatorServer, shard: int, count: int) -> int:
    return next(g.id for g in sim.state.world.guilds if (g.id >> 22) % count == shard)


async def test_buffered_events_count_as_lost_once_the_resume_window_ends(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    gateway = sim.state.gateway
    client = await connect()
    await client.ready((0, 2))
    guild_id = await _guild_of_shard(sim, 0, 2)
    await _drop(sim, client)
    for i in range(3):
        assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": f"missed {i}"})  # buffered
    stats = await _stats(http, sim)
    mine = _session(stats, client.session_id)
    assert mine["state"] == "resumable" and mine["buffered"] == 3 and mine["undelivered"] == 3
    assert 0 < mine["resumable_for_s"] <= WINDOW and stats["resume_window_s"] == WINDOW
    assert stats["pending"] == 3 and stats["lost"] == 0 and stats["buffered"] == 3
    # Nobody resumes: the resume-window timer ends the session, and what it held is lost.
    await wait_for(lambda: sim.state.stats.lost == 3, timeout=5, message="the window to end")
    stats = await _stats(http, sim)
    mine = _session(stats, client.session_id)
    assert mine["state"] == "ended" and mine["end_reason"] == "resume window ended"
    assert (mine["lost"], mine["buffered"], mine["replayed"], mine["undelivered"]) == (3, 3, 0, 0)
    assert stats["lost_buffered"] == 3 and stats["lost_unrouted"] == 0 and stats["sessions_expired"] == 1
    assert stats["shards"]["0"]["lost"] == 3 and stats["pending"] == 0
    # A RESUME after the window is refused.
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    refused = await again.recv()
    assert refused["op"] == 9 and refused["d"] is False


async def test_a_fresh_identify_never_sees_the_dead_sessions_buffer(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    """The issue's case: a new process IDENTIFYs instead of resuming; what the old session held is lost."""
    gateway = sim.state.gateway
    old = await connect()
    await old.ready((0, 2))
    guild_id = await _guild_of_shard(sim, 0, 2)
    await _drop(sim, old)
    for i in range(2):
        assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": f"for the dead {i}"})
    await wait_for(lambda: gateway.limiter.retry_after(0) == 0, timeout=5, message="bucket 0's window")
    new = await connect()
    await new.ready((0, 2))
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": "for the living"})
    assert (await new.recv())["d"]["content"] == "for the living"
    await wait_for(lambda: sim.state.stats.sessions_expired == 1, timeout=5, message="the old window to end")
    stats = await _stats(http, sim)
    assert stats["lost"] == 2 and stats["identifies"] == 2
    assert _session(stats, old.session_id)["lost"] == 2  # only what the old one buffered before `new` came
    assert _session(stats, new.session_id)["lost"] == 0 and _session(stats, new.session_id)["state"] == "live"


async def test_a_resume_within_the_window_replays_and_loses_nothing(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    gateway = sim.state.gateway
    client = await connect()
    await client.ready((0, 2))
    guild_id = await _guild_of_shard(sim, 0, 2)
    await _drop(sim, client)
    for i in range(3):
        assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": f"missed {i}"})
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    replayed = [await again.recv() for _ in range(3)]
    assert [m["d"]["content"] for m in replayed] == ["missed 0", "missed 1", "missed 2"]
    assert (await again.recv())["t"] == "RESUMED"
    await again.send(1, again.seq)  # a heartbeat carries the client's sequence number
    assert (await again.recv())["op"] == 11
    stats = await _stats(http, sim)
    mine = _session(stats, client.session_id)
    assert (mine["state"], mine["buffered"], mine["replayed"], mine["resumes"], mine["lost"]) == (
        "live", 3, 3, 1, 0)
    assert mine["written_seq"] == mine["seq"] == mine["acked_seq"] == again.seq
    assert stats["replayed"] == 3 and stats["lost"] == 0 and stats["pending"] == 0


async def test_the_resume_window_is_exact(http: aiohttp.ClientSession) -> None:
    """A session can be resumed ``--resume-ttl`` seconds after its drop, and not after (an injected clock)."""
    now = [1000.0]
    async with SimulatorServer(_config(resume_ttl=30.0), clock=lambda: now[0]) as server:
        connect = connector(http, server)
        client = await connect()
        await client.ready((0, 2))
        await _drop(server, client)
        now[0] += 30.0  # the last moment of the window
        again = await connect()
        await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
        assert (await again.recv())["t"] == "RESUMED"
        again.session_id = client.session_id
        await _drop(server, again)
        now[0] += 30.001
        late = await connect()
        await late.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
        refused = await late.recv()
        assert refused["op"] == 9 and refused["d"] is False
        assert server.state.stats.sessions_expired == 1 and server.state.stats.failed_resumes == 1


async def test_a_silent_socket_stays_open_without_dispatches_or_acks(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    gateway = sim.state.gateway
    client = await connect()
    await client.ready((0, 2))
    guild_id = await _guild_of_shard(sim, 0, 2)
    async with http.post(sim.url + "/_sim/faults", json={"kind": "silent", "shard_id": 0}) as resp:
        assert resp.status == 200 and (await resp.json())["applied"] == 1
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": "into the void"})
    await client.send(1, client.seq)
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.5)  # no ACK, no dispatch
    assert not client.ws.closed and gateway.live_shards() == {0: 1}
    stats = await _stats(http, sim)
    mine = _session(stats, client.session_id)
    assert mine["state"] == "silent" and mine["buffered"] == 1 and stats["pending"] == 1
    assert stats["heartbeats"] == 1
    # The client gives up on the zombie and resumes: the event comes through.
    await _drop(sim, client)
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    assert (await again.recv())["d"]["content"] == "into the void"
    assert (await again.recv())["t"] == "RESUMED"
    await again.send(1, again.seq)
    assert (await again.recv())["op"] == 11  # the new socket is healthy
    assert sim.state.stats.replayed == 1 and sim.state.stats.lost == 0


async def test_overlapping_generations_each_get_their_guilds_events(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    """A reshard from 2 to 4 shards: while both generations are live, each covering session gets the event;
    once the old one is gone (resumable, never resumed), the new one alone gets it and nothing is lost."""
    gateway, world = sim.state.gateway, sim.state.world
    old: list[GatewayClient] = []
    new: list[GatewayClient] = []
    for count, group in ((2, old), (4, new)):
        for shard in range(count):
            await wait_for(lambda shard=shard: gateway.limiter.retry_after(shard) == 0, timeout=5,
                           message="the bucket's window")
            client = await connect()
            await client.ready((shard, count))
            group.append(client)
    guild = next(g for g in world.guilds if (g.id >> 22) % 4 == 3)  # shard 1 of 2, shard 3 of 4
    body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
            "author_id": str(guild.member_ids[0]), "content": "both generations"}
    async with http.post(sim.url + "/_sim/messages", json=body) as resp:
        assert resp.status == 200 and (await resp.json())["delivered"] is True
    assert (await old[1].recv())["d"]["content"] == "both generations"
    assert (await new[3].recv())["d"]["content"] == "both generations"
    interaction = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
                   "user_id": str(guild.member_ids[0]), "name": "ping", "wait": False}
    async with http.post(sim.url + "/_sim/interactions", json=interaction) as resp:
        assert resp.status == 202
    assert (await old[1].recv())["t"] == (await new[3].recv())["t"] == "INTERACTION_CREATE"
    for client in old:  # the old generation stops with a resumable close and is never resumed
        await _drop(sim, client)
    body["content"] = "new generation only"
    async with http.post(sim.url + "/_sim/messages", json=body) as resp:
        assert (await resp.json())["delivered"] is True
    assert (await new[3].recv())["d"]["content"] == "new generation only"
    await wait_for(lambda: sim.state.stats.sessions_expired == 2, timeout=5, message="the old windows to end")
    stats = await _stats(http, sim)
    assert stats["lost"] == 0 and stats["buffered"] == 0
    assert all(_session(stats, c.session_id)["buffered"] == 0 for c in old)


async def test_what_a_socket_still_writes_after_its_session_ended_is_not_lost(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    """Op 9 ``d: false`` ends the session at once, but the dispatches queued before it still reach the
    client: the books close only once that socket's writer is done."""
    gateway = sim.state.gateway
    client = await connect()
    await client.ready((0, 2))
    guild_id = await _guild_of_shard(sim, 0, 2)
    for i in range(2):  # queued, not yet written: the writer runs when this coroutine yields
        assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": f"queued {i}"})
    assert gateway.apply_fault("invalid_session", 0, resumable=False, code=4000) == 1
    assert [(await client.recv())["d"]["content"] for _ in range(2)] == ["queued 0", "queued 1"]
    invalid = await client.recv()
    assert invalid["op"] == 9 and invalid["d"] is False
    assert not gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": "too late"})  # no session now
    await client.ws.close(code=1000)
    await wait_for(lambda: not gateway.connections, message="the socket to finish")
    stats = await _stats(http, sim)
    mine = _session(stats, client.session_id)
    assert mine["state"] == "ended" and mine["end_reason"] == "op 9 d=false"
    assert mine["lost"] == 0 and mine["dispatched"] == mine["seq"] == mine["written_seq"]
    assert stats["lost"] == stats["lost_unrouted"] == 1


async def test_an_outage_closes_every_socket_and_refuses_upgrades_until_it_ends(
        sim: SimulatorServer, connect: Connect, http: aiohttp.ClientSession) -> None:
    client = await connect()
    await client.ready((0, 2))
    async with http.post(sim.url + "/_sim/faults", json={"kind": "outage", "seconds": 0.4}) as resp:
        assert resp.status == 200 and (await resp.json())["applied"] == 1
    closing = await asyncio.wait_for(client.ws.receive(), timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4000
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect()
    assert refused.value.status == 503 and sim.state.stats.outage_refusals == 1
    again: GatewayClient | None = None

    async def reconnected() -> bool:
        nonlocal again
        try:
            again = await connect()
        except aiohttp.WSServerHandshakeError:
            return False
        return True
    await wait_for(reconnected, timeout=5, interval=0.1, message="upgrades accepted once the outage ended")
    assert again is not None
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    assert (await again.recv())["t"] == "RESUMED"  # the session outlived the outage, within its window
    await again.ws.close()
    await client.ws.close()


@pytest.mark.parametrize("body", [{"kind": "outage"}, {"kind": "outage", "seconds": 0},
                                  {"kind": "outage", "seconds": 7200}])
async def test_an_outage_needs_a_length(sim: SimulatorServer, http: aiohttp.ClientSession,
                                        body: dict[str, Any]) -> None:
    async with http.post(sim.url + "/_sim/faults", json=body) as resp:
        assert resp.status == 400, await resp.text()
