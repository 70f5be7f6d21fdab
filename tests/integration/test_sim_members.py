"""Large guilds over the raw gateway: GUILD_CREATE trimming, member chunks, their rate limit, size-weighted traffic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import Connect, GatewayClient, connector
from tests.support import wait_for

TOKEN = "test-token"
GUILDS, MEMBERS, PRESENCES, TYPING, CONTENT = 1, 1 << 1, 1 << 8, 1 << 11, 1 << 15


def _config(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {"port": 0, "guilds": 8, "members_per_guild": 20, "max_member_count": 5_000,
                            "huge_guilds": 1, "token": TOKEN, "identify_window": 0.05}
    base.update(overrides)
    return SimConfig(**base)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config(member_request_interval=3600)) as server:
        yield server


@pytest.fixture
def connect(http: aiohttp.ClientSession, sim: SimulatorServer) -> Connect:
    return connector(http, sim)


async def _session(connect: Connect, intents: int, **extra: Any) -> tuple[GatewayClient, dict[int, dict[str, Any]]]:
    client = await connect()
    _, creates = await client.ready((0, 1), intents=intents, **extra)
    return client, {int(c["d"]["id"]): c["d"] for c in creates}


async def _chunks(client: GatewayClient) -> list[dict[str, Any]]:
    """Every GUILD_MEMBERS_CHUNK of one answer (they arrive in order)."""
    first = await client.recv()
    assert first["t"] == "GUILD_MEMBERS_CHUNK", first
    chunks = [first["d"]]
    while len(chunks) < first["d"]["chunk_count"]:
        msg = await client.recv()
        assert msg["t"] == "GUILD_MEMBERS_CHUNK", msg
        chunks.append(msg["d"])
    return chunks


async def _nothing_pending(client: GatewayClient) -> None:
    """A heartbeat's ACK is the next message: nothing was sent before it."""
    await client.send(1, None)
    assert (await client.recv())["op"] == 11


def _huge(sim: SimulatorServer) -> Any:
    return max(sim.state.world.guilds, key=lambda g: g.member_count)


async def test_guild_create_without_presences_carries_only_the_bot(sim: SimulatorServer, connect: Connect) -> None:
    world = sim.state.world
    _, creates = await _session(connect, GUILDS | MEMBERS)
    for guild in world.guilds:
        d = creates[guild.id]
        assert [m["user"]["id"] for m in d["members"]] == [str(world.application_id)]
        assert d["member_count"] == guild.member_count and d["presences"] == []


async def test_guild_create_over_large_threshold_leaves_offline_members_without_roles_out(
        sim: SimulatorServer, connect: Connect) -> None:
    world = sim.state.world
    _, creates = await _session(connect, GUILDS | PRESENCES, large_threshold=50)
    for guild in world.guilds:
        d = creates[guild.id]
        assert d["large"] is (guild.member_count > 50)
        online = {p["user"]["id"] for p in d["presences"]}
        humans = d["members"][:-1]
        if guild.member_count > 50:
            assert len(humans) < guild.member_count - 1
            assert all(m["roles"] or m["user"]["id"] in online for m in humans)
        else:
            assert len(humans) == guild.member_count - 1


async def test_whole_member_list_comes_in_chunks_that_add_up_to_member_count(sim: SimulatorServer,
                                                                            connect: Connect) -> None:
    world, stats = sim.state.world, sim.state.stats
    client, _ = await _session(connect, GUILDS | MEMBERS | PRESENCES)
    guild = _huge(sim)
    await client.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0, "presences": True, "nonce": "n1"})
    chunks = await _chunks(client)
    assert [c["chunk_index"] for c in chunks] == list(range(5)) and all(c["chunk_count"] == 5 for c in chunks)
    assert all(c["nonce"] == "n1" and c["guild_id"] == str(guild.id) for c in chunks)
    assert all(len(c["members"]) == 1000 for c in chunks)
    ids = [m["user"]["id"] for c in chunks for m in c["members"]]
    assert len(ids) == len(set(ids)) == guild.member_count == 5_000
    assert set(ids) == {str(u) for u in guild.member_ids} | {str(world.application_id)}
    online = [p for c in chunks for p in c["presences"]]
    assert 0 < len(online) < 5_000 and {p["user"]["id"] for p in online} <= set(ids)
    assert stats.members_sent == 5_000 and stats.member_chunks_sent == 5


async def test_a_repeated_whole_list_request_gets_rate_limited(sim: SimulatorServer, connect: Connect) -> None:
    stats = sim.state.stats
    client, _ = await _session(connect, GUILDS | MEMBERS)
    guild = _huge(sim)
    other = next(g for g in sim.state.world.guilds if g is not guild)
    await client.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0})
    assert len(await _chunks(client)) == 5
    await client.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0, "nonce": "again"})
    limited = await client.recv()
    assert limited["t"] == "RATE_LIMITED" and limited["op"] == 0
    assert limited["d"]["opcode"] == 8 and 3500 < limited["d"]["retry_after"] <= 3600
    assert limited["d"]["meta"] == {"guild_id": str(guild.id), "nonce": "again"}
    await _nothing_pending(client)
    # The limit is per guild, and only for the whole list.
    await client.send(8, {"guild_id": str(other.id), "query": "", "limit": 0})
    assert sum(len(c["members"]) for c in await _chunks(client)) == other.member_count
    await client.send(8, {"guild_id": str(guild.id), "query": "", "limit": 1500})
    assert [len(c["members"]) for c in await _chunks(client)] == [1000, 500]
    assert stats.member_requests_rate_limited == 1


async def test_rate_limit_is_bot_wide_and_expires(http: aiohttp.ClientSession) -> None:
    async with SimulatorServer(_config(member_request_interval=30)) as server:
        now = [1000.0]
        server.state.gateway._ops.members.clock = lambda: now[0]  # the limit's clock, moved by hand
        connect = connector(http, server)
        first, _ = await _session(connect, GUILDS | MEMBERS)
        guild = _huge(server)
        await first.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0})
        assert len(await _chunks(first)) == 5
        # Another session of the same bot shares the limit.
        second, _ = await _session(connect, GUILDS | MEMBERS)
        now[0] += 29.5
        await second.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0})
        limited = await second.recv()
        assert limited["t"] == "RATE_LIMITED" and limited["d"]["retry_after"] == pytest.approx(0.5)
        now[0] += 0.5
        await second.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0})
        assert len(await _chunks(second)) == 5


async def test_whole_list_without_the_members_intent_is_not_answered(sim: SimulatorServer, connect: Connect) -> None:
    stats = sim.state.stats
    client, _ = await _session(connect, GUILDS)
    guild = _huge(sim)
    await client.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0})
    await _nothing_pending(client)
    assert stats.member_requests_ignored == 1
    # Asking for given users needs no privileged intent; presences without GUILD_PRESENCES stay off.
    wanted = [guild.member_ids[7], guild.member_ids[4_000]]
    await client.send(8, {"guild_id": str(guild.id), "user_ids": wanted, "presences": True})
    (chunk,) = await _chunks(client)
    assert [m["user"]["id"] for m in chunk["members"]] == [str(u) for u in wanted]
    assert "presences" not in chunk and chunk["not_found"] == []


async def test_a_prefix_query_returns_at_most_100_matching_members(sim: SimulatorServer, connect: Connect) -> None:
    client, _ = await _session(connect, GUILDS)
    guild = _huge(sim)
    await client.send(8, {"guild_id": str(guild.id), "query": "Am", "limit": 0})
    (chunk,) = await _chunks(client)
    names = [m["user"]["username"] for m in chunk["members"]]
    assert len(names) == 100 and all(n.startswith("am") for n in names)
    await client.send(8, {"guild_id": str(guild.id), "query": "amber_", "limit": 3})
    (chunk,) = await _chunks(client)
    assert len(chunk["members"]) == 3


@pytest.mark.parametrize("d", [
    {"guild_id": ["1", "2"], "query": "", "limit": 0},  # one guild per request
    {"guild_id": "1", "limit": 0},  # neither query nor user_ids
    {"guild_id": "1", "user_ids": [str(i) for i in range(1, 102)]},  # over 100 users
    {"guild_id": "1", "query": "", "limit": -1},
])
async def test_malformed_member_requests_close_4002(sim: SimulatorServer, connect: Connect, d: dict[str, Any]) -> None:
    client, _ = await _session(connect, GUILDS | MEMBERS)
    await client.send(8, d)
    assert await client.close_code() == 4002


async def test_load_traffic_is_size_weighted_and_honours_intents(sim: SimulatorServer, connect: Connect) -> None:
    stats = sim.state.stats
    client, _ = await _session(connect, GUILDS | PRESENCES)  # no GUILD_MEMBERS, no typing
    world = sim.state.world
    before = sum(g.member_count for g in world.guilds)
    status, _ = await sim_control(sim, "POST", "load", {"kind": "guild_traffic", "rate": 0, "count": 400, "seed": 5})
    assert status == 202

    async def finished() -> dict[str, Any] | None:
        _, body = await sim_control(sim, "GET", "load")
        return body if not body["running"] and body["sent"] == 400 else None

    report = await wait_for(finished, timeout=30, message="the load run to finish")
    by_event = report["by_event"]
    assert set(by_event) <= {"PRESENCE_UPDATE", "TYPING_START", "GUILD_MEMBER_UPDATE", "GUILD_MEMBER_ADD",
                             "GUILD_MEMBER_REMOVE"}
    assert by_event["PRESENCE_UPDATE"] > 200  # mostly presences
    received = 0
    while received < by_event["PRESENCE_UPDATE"]:
        msg = await client.recv()
        assert msg["t"] == "PRESENCE_UPDATE", msg
        received += 1
    await _nothing_pending(client)
    assert report["delivered"] == received and stats.intent_filtered == 400 - received
    # Joins and leaves change the world they name.
    after = sum(g.member_count for g in world.guilds)
    assert after - before == by_event.get("GUILD_MEMBER_ADD", 0) - by_event.get("GUILD_MEMBER_REMOVE", 0)


async def sim_control(sim: SimulatorServer, method: str, path: str,
                      body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, f"{sim.url}/_sim/{path}", json=body) as resp:
        return resp.status, await resp.json()
