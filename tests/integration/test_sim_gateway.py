"""The simulator's gateway over real sockets: an in-process server and a raw aiohttp websocket client."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.support import wait_for

TOKEN = "test-token"
INTENTS = 513 | (1 << 15)  # GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT


class GatewayClient:
    """A minimal gateway client: HELLO, IDENTIFY/RESUME, receive with zlib-stream inflation."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, compressed: bool) -> None:
        self.ws = ws
        self._inflate = zlib.decompressobj() if compressed else None
        self.hello: dict[str, Any] | None = None
        self.seq: int | None = None
        self.session_id: str | None = None

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.BINARY:
            assert self._inflate is not None, "binary frame without compression"
            payload = json.loads(self._inflate.decompress(msg.data))
        elif msg.type is aiohttp.WSMsgType.TEXT:
            payload = json.loads(msg.data)
        else:
            raise AssertionError(f"expected a payload, got {msg.type} {msg.data!r} {msg.extra!r}")
        if payload.get("s") is not None:
            self.seq = payload["s"]
        return payload

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_str(json.dumps({"op": op, "d": d}))

    async def identify(self, shard: tuple[int, int] = (0, 1), token: str = TOKEN, **extra: Any) -> None:
        d = {"token": token, "intents": INTENTS, "shard": list(shard), "large_threshold": 250,
             "properties": {"os": "linux", "browser": "test", "device": "test"}, **extra}
        await self.send(2, d)

    async def ready(self, shard: tuple[int, int] = (0, 1),
                    **extra: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """IDENTIFY, then READY and every GUILD_CREATE it announces."""
        await self.identify(shard, **extra)
        ready = await self.recv()
        assert ready["t"] == "READY", ready
        self.session_id = ready["d"]["session_id"]
        creates = [await self.recv() for _ in ready["d"]["guilds"]]
        return ready, creates

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; return its close code."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data)
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return self.ws.close_code


Connect = Callable[..., Awaitable[GatewayClient]]


def _config(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {"port": 0, "guilds": 24, "guild_sizes": "fixed", "members_per_guild": 5, "shards": 2,
                            "max_concurrency": 2, "identify_window": 0.2, "token": TOKEN,
                            "heartbeat_interval_ms": 30_000}
    base.update(overrides)
    return SimConfig(**base)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config()) as server:
        yield server


def connector(http: aiohttp.ClientSession, server: SimulatorServer) -> Connect:
    async def connect(query: str = "?v=10&encoding=json&compress=zlib-stream", *, hello: bool = True) -> GatewayClient:
        ws = await http.ws_connect(server.gateway_url + query, max_msg_size=0)
        client = GatewayClient(ws, "compress=zlib-stream" in query)
        if hello:
            client.hello = await client.recv()
            assert client.hello["op"] == 10
        return client
    return connect


@pytest.fixture
def connect(http: aiohttp.ClientSession, sim: SimulatorServer) -> Connect:
    return connector(http, sim)


async def test_hello_and_heartbeat_ack_over_plain_text(sim: SimulatorServer, connect: Connect) -> None:
    client = await connect("?v=10&encoding=json")
    assert client.hello is not None and client.hello["d"]["heartbeat_interval"] == 30_000
    for _ in range(3):
        await client.send(1, None)
        assert (await client.recv())["op"] == 11
    assert sim.state.stats.heartbeats == 3


async def test_identify_sends_ready_and_exactly_the_shards_guilds(sim: SimulatorServer, connect: Connect) -> None:
    world = sim.state.world
    clients = []
    for shard in (0, 1):
        client = await connect()
        clients.append(client)
        ready, creates = await client.ready((shard, 2))
        d = ready["d"]
        expected = [str(g.id) for g in world.guilds if (g.id >> 22) % 2 == shard]
        assert [g["id"] for g in d["guilds"]] == expected
        assert all(g["unavailable"] is True for g in d["guilds"])
        assert d["shard"] == [shard, 2] and d["v"] == 10
        assert d["user"]["id"] == str(world.application_id) and d["user"]["bot"] is True
        assert d["application"]["id"] == str(world.application_id)
        assert d["resume_gateway_url"] == sim.resume_gateway_url  # a URL of its own, for RESUME
        assert d["application"]["flags"] == (1 << 13) | (1 << 15) | (1 << 19)  # the three _LIMITED intent flags
        assert [c["t"] for c in creates] == ["GUILD_CREATE"] * len(expected)
        assert [c["d"]["id"] for c in creates] == expected
        assert [m["s"] for m in [ready, *creates]] == list(range(1, len(expected) + 2))
        first = creates[0]["d"]
        assert first["channels"][0]["type"] == 0 and "guild_id" not in first["channels"][0]
        assert str(world.application_id) in {m["user"]["id"] for m in first["members"]}
        assert sim.state.stats.shards[shard].guilds == len(expected)
    stats = sim.state.stats
    assert stats.identifies == 2 and stats.dispatched == 24 + 2
    assert sim.state.gateway.live_shards() == {0: 1, 1: 1} and sim.state.gateway.shard_count() == 2


async def test_bad_token_closes_4004_and_counts(sim: SimulatorServer, connect: Connect) -> None:
    client = await connect()
    await client.identify(token="wrong")
    assert await client.close_code() == 4004
    assert sim.state.stats.auth_failures == 1 and sim.state.stats.identifies == 0


async def test_identify_inside_the_bucket_window_gets_invalid_session(http: aiohttp.ClientSession) -> None:
    async with SimulatorServer(_config(identify_window=30.0)) as server:
        connect = connector(http, server)
        first, second, other_bucket = await connect(), await connect(), await connect()
        await first.ready((0, 4))
        await second.identify((2, 4))  # 2 % 2 == 0: the same bucket as shard 0
        refused = await second.recv()
        assert refused["op"] == 9 and refused["d"] is False
        await other_bucket.ready((1, 4))  # bucket 1 is free
        stats = server.state.stats
        assert stats.identify_violations == 1 and stats.identifies == 2
        assert server.state.gateway.live_shards() == {0: 1, 1: 1}
        assert server.state.gateway.identify_remaining() == server.config.session_start_total - 2


async def test_identify_is_accepted_again_once_the_window_passed(sim: SimulatorServer, connect: Connect) -> None:
    gateway = sim.state.gateway
    a, b = await connect(), await connect()
    await a.ready((0, 2))
    await wait_for(lambda: gateway.limiter.retry_after(0) == 0, timeout=5, message="bucket 0's window")
    await b.ready((0, 2))  # a second session of shard 0 is allowed (Discord allows overlaps)
    assert sim.state.stats.identify_violations == 0 and gateway.live_shards() == {0: 2}


async def test_resume_replays_what_was_dispatched_while_detached(sim: SimulatorServer, connect: Connect) -> None:
    gateway, stats = sim.state.gateway, sim.state.stats
    client = await connect()
    _, creates = await client.ready((0, 2))
    guild_id = int(creates[0]["d"]["id"])
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": "live"})
    live = await client.recv()
    assert live["t"] == "MESSAGE_CREATE" and live["d"]["content"] == "live"
    last_seq = live["s"]
    await client.ws.close(code=4000)  # not 1000/1001: the session stays resumable
    await wait_for(lambda: not gateway.live_shards(), message="the session to detach")
    for i in range(3):
        assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": f"missed {i}"})
    assert stats.lost == 0

    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": last_seq})
    replayed = [await again.recv() for _ in range(3)]
    assert [m["d"]["content"] for m in replayed] == ["missed 0", "missed 1", "missed 2"]
    assert [m["s"] for m in replayed] == [last_seq + 1, last_seq + 2, last_seq + 3]
    resumed = await again.recv()
    assert resumed["t"] == "RESUMED" and isinstance(resumed["d"], dict)
    assert stats.resumes == 1 and stats.shards[0].resumes == 1
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": "after"})
    after = await again.recv()
    assert after["d"]["content"] == "after" and after["s"] == resumed["s"] + 1


async def test_resume_from_an_earlier_sequence_replays_guild_creates(sim: SimulatorServer, connect: Connect) -> None:
    client = await connect()
    _, creates = await client.ready((1, 2))
    await client.ws.close(code=4000)
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": 1})  # only READY was seen
    replayed = [await again.recv() for _ in creates]
    assert [m["d"] for m in replayed] == [c["d"] for c in creates]
    assert (await again.recv())["t"] == "RESUMED"


async def test_resume_fails_for_unknown_and_cleanly_closed_sessions(sim: SimulatorServer, connect: Connect) -> None:
    stats = sim.state.stats
    client = await connect()
    await client.send(6, {"token": TOKEN, "session_id": "nope", "seq": 3})
    refused = await client.recv()
    assert refused["op"] == 9 and refused["d"] is False
    closer = await connect()
    await closer.ready((0, 2))
    await closer.ws.close(code=1000)  # a clean close ends the session
    await wait_for(lambda: not sim.state.gateway.live_shards(), message="the session to end")
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": closer.session_id, "seq": closer.seq})
    assert (await again.recv())["d"] is False
    assert stats.failed_resumes == 2 and stats.resumes == 0


async def test_events_for_a_shard_without_session_are_lost(sim: SimulatorServer, connect: Connect) -> None:
    gateway, world = sim.state.gateway, sim.state.world
    assert not gateway.dispatch_guild(world.guilds[0].id, "MESSAGE_CREATE", {})
    client = await connect()
    await client.ready((0, 2))
    other = next(g for g in world.guilds if (g.id >> 22) % 2 == 1)
    assert not gateway.dispatch_guild(other.id, "MESSAGE_CREATE", {})
    assert sim.state.stats.lost == 2


async def test_every_live_session_of_a_shard_gets_its_events(sim: SimulatorServer, connect: Connect) -> None:
    """Discord sends a shard's events to every session identified with it ("multiple sessions with the same
    [shard_id, num_shards]", gateway.mdx, Sharding), not only to the newest."""
    gateway = sim.state.gateway
    old, new = await connect(), await connect()
    _, creates = await old.ready((0, 2))
    await wait_for(lambda: gateway.limiter.retry_after(0) == 0, timeout=5, message="bucket 0's window")
    await new.ready((0, 2))
    assert gateway.dispatch_guild(int(creates[0]["d"]["id"]), "MESSAGE_DELETE", {"n": 1})
    assert (await old.recv())["d"] == {"n": 1} and (await new.recv())["d"] == {"n": 1}
    assert gateway.dispatch_guild_json(int(creates[0]["d"]["id"]), "MESSAGE_DELETE", '{"n":1.5}')
    assert (await old.recv())["d"] == {"n": 1.5} and (await new.recv())["d"] == {"n": 1.5}
    assert gateway.dispatch_shard(0, "USER_UPDATE", {"n": 2}) == 2
    assert (await old.recv())["d"] == {"n": 2} and (await new.recv())["d"] == {"n": 2}


async def test_sending_too_fast_closes_4008(http: aiohttp.ClientSession) -> None:
    async with SimulatorServer(_config(gateway_send_limit=5, gateway_send_window=60.0)) as server:
        client = await connector(http, server)()
        for _ in range(5):
            await client.send(1, None)
            assert (await client.recv())["op"] == 11
        await client.send(1, None)
        assert await client.close_code() == 4008
        assert server.state.stats.send_limit_closes == 1


async def test_too_many_guilds_for_one_shard_closes_4011(http: aiohttp.ClientSession) -> None:
    async with SimulatorServer(_config(max_guilds_per_shard=10)) as server:
        client = await connector(http, server)()
        await client.identify((0, 1))
        assert await client.close_code() == 4011
        assert server.state.stats.sharding_required_closes == 1 and server.state.stats.identifies == 0


@pytest.mark.parametrize(("query", "payload", "code"), [
    ("?v=8&encoding=json", None, 4012),
    ("?v=10&encoding=etf", None, 4002),
    ("?v=10&encoding=json", "not json", 4002),
    ("?v=10&encoding=json", '{"op": 42, "d": null}', 4001),
    ("?v=10&encoding=json", '{"op": 3, "d": {"status": "online"}}', 4003),
    ("?v=10&encoding=json", '{"op": 1, "d": "' + "x" * 5000 + '"}', 4002),
    ("?v=10&encoding=json", '{"op": 2, "d": {"token": "test-token", "properties": {}, "shard": [0, 1]}}', 4013),
    ("?v=10&encoding=json", '{"op": 2, "d": {"token": "test-token", "properties": {}, "intents": 1, '
                            '"shard": [2, 2]}}', 4010),
    ("?v=10&encoding=json", '{"op": 2, "d": {"token": "test-token", "properties": {}, "intents": 1, '
                            '"shard": [0, 1000000000]}}', 4010),
    ("?v=10&encoding=json", '{"op": 2, "d": {"token": "test-token", "properties": {}, "intents": 1073741824}}',
     4013),
    ("?v=10&encoding=json", '[1, 2]', 4002),
])
async def test_bad_input_gets_discords_close_codes(sim: SimulatorServer, connect: Connect, query: str,
                                                   payload: str | None, code: int) -> None:
    client = await connect(query, hello=payload is not None)
    if payload is not None:
        await client.ws.send_str(payload)
    assert await client.close_code() == code
    # The server is still fine.
    ok = await connect()
    await ok.send(1, None)
    assert (await ok.recv())["op"] == 11


async def test_second_identify_on_one_connection_closes_4005(sim: SimulatorServer, connect: Connect) -> None:
    client = await connect()
    await client.ready((0, 2))
    await client.identify((1, 2))
    assert await client.close_code() == 4005


async def test_request_guild_members_answers_chunks(sim: SimulatorServer, connect: Connect) -> None:
    world = sim.state.world
    client = await connect()
    _, creates = await client.ready((0, 2), intents=INTENTS | 2)  # + GUILD_MEMBERS, for the whole list
    guild = world.guild(int(creates[0]["d"]["id"]))
    assert guild is not None
    await client.send(8, {"guild_id": str(guild.id), "query": "", "limit": 0, "nonce": "abc"})
    chunk = await client.recv()
    assert chunk["t"] == "GUILD_MEMBERS_CHUNK" and chunk["d"]["nonce"] == "abc"
    assert chunk["d"]["chunk_index"] == 0 and chunk["d"]["chunk_count"] == 1
    ids = {m["user"]["id"] for m in chunk["d"]["members"]}
    assert ids == {str(u) for u in guild.member_ids} | {str(world.application_id)}
    await client.send(8, {"guild_id": guild.id, "user_ids": [guild.member_ids[1], 42], "limit": 0})
    chunk = await client.recv()
    assert [m["user"]["id"] for m in chunk["d"]["members"]] == [str(guild.member_ids[1])]
    assert chunk["d"]["not_found"] == ["42"]


async def test_missing_heartbeats_close_the_connection_and_the_session_stays_resumable(
        http: aiohttp.ClientSession) -> None:
    """"If your app fails to send a heartbeat event in time, your connection will be closed and you will be
    forced to Resume" (gateway.mdx): closed with 4000, not 4009 (which says "start a new one")."""
    async with SimulatorServer(_config(heartbeat_interval_ms=1000)) as server:
        connect = connector(http, server)
        client = await connect()
        _, creates = await client.ready((0, 2))
        assert await client.close_code(timeout=5) == 4000
        assert server.state.stats.heartbeat_timeouts == 1
        assert server.state.gateway.dispatch_guild(int(creates[0]["d"]["id"]), "MESSAGE_DELETE", {"n": 1})
        again = await connect()
        await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
        missed = await again.recv()
        assert missed["d"] == {"n": 1} and (await again.recv())["t"] == "RESUMED"
        stats = server.state.stats
        assert stats.resumes == 1 and stats.failed_resumes == 0 and stats.identifies == 1
        assert stats.replayed == 1 and stats.lost == 0


async def test_fault_disconnect_keeps_the_session_resumable(sim: SimulatorServer, connect: Connect) -> None:
    gateway = sim.state.gateway
    client = await connect()
    await client.ready((0, 2))
    assert gateway.apply_fault("disconnect", 1, resumable=True, code=4000) == 0  # shard 1 has no session
    assert gateway.apply_fault("disconnect", 0, resumable=True, code=4000) == 1
    assert await client.close_code() == 4000
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    assert (await again.recv())["t"] == "RESUMED"
    assert sim.state.stats.faults_applied == 2 and sim.state.stats.shards[0].closes[4000] == 1


async def test_fault_reconnect_and_invalid_session(sim: SimulatorServer, connect: Connect) -> None:
    gateway = sim.state.gateway
    client = await connect()
    await client.ready((0, 2))
    assert gateway.apply_fault("reconnect", None, resumable=True, code=4000) == 1
    assert (await client.recv())["op"] == 7
    assert gateway.apply_fault("invalid_session", 0, resumable=False, code=4000) == 1
    invalid = await client.recv()
    assert invalid["op"] == 9 and invalid["d"] is False
    await client.ws.close(code=1000)
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": client.session_id, "seq": client.seq})
    assert (await again.recv())["d"] is False  # the session was invalidated
    with pytest.raises(ValueError):
        gateway.apply_fault("explode", None, resumable=True, code=4000)


async def test_shutdown_closes_every_socket_with_1001(http: aiohttp.ClientSession) -> None:
    server = SimulatorServer(_config())
    await server.start()
    try:
        client = await connector(http, server)()
        await client.ready((0, 2))
    finally:
        await server.stop()
    assert await client.close_code() == 1001


async def test_intents_filter_events_and_message_content(sim: SimulatorServer, connect: Connect) -> None:
    gateway, stats, world = sim.state.gateway, sim.state.stats, sim.state.world
    client = await connect()
    await client.identify((0, 2), intents=513)  # GUILDS | GUILD_MESSAGES: no typing, no MESSAGE_CONTENT
    ready = await client.recv()
    creates = [await client.recv() for _ in ready["d"]["guilds"]]
    guild_id = int(creates[0]["d"]["id"])
    assert not gateway.dispatch_guild(guild_id, "TYPING_START", {"user_id": "1"})
    assert stats.intent_filtered == 1 and stats.lost == 0
    message = {"id": "5", "content": "secret", "embeds": [{"title": "t"}], "attachments": [], "components": [],
               "author": {"id": "77"}, "mentions": []}
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", message)
    seen = await client.recv()
    assert seen["d"]["content"] == "" and seen["d"]["embeds"] == [] and seen["d"]["id"] == "5"
    assert message["content"] == "secret"  # the caller's dict is left alone
    bot = {"id": str(world.application_id)}
    assert gateway.dispatch_guild_json(guild_id, "MESSAGE_CREATE", json.dumps({**message, "mentions": [bot]}))
    assert (await client.recv())["d"]["content"] == "secret"  # mentions of the bot keep their content
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {**message, "author": bot})
    assert (await client.recv())["d"]["content"] == "secret"  # so do the bot's own messages
    assert gateway.dispatch_shard(0, "TYPING_START", {"user_id": "1"}) == 0  # a DM typing: no intent either
    assert gateway.dispatch_shard(0, "USER_UPDATE", {"id": "1"}) == 1  # no intent needed
    assert (await client.recv())["t"] == "USER_UPDATE"
