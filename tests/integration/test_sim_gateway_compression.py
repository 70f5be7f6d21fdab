"""Gateway transport compression over real sockets: zstd-stream, zlib-stream and plain text frames.

A raw aiohttp websocket client decodes what the simulator sends with the codec's own streaming
decompressor (``zstandard``'s ``decompressobj``, ``zlib.decompressobj``), one context per
connection, and requires every websocket frame to decode, on its own, to exactly one gateway message.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import zstandard

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.support import wait_for

TOKEN = "test-token"
INTENTS = 513 | (1 << 15)  # GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZLIB_SUFFIX = b"\x00\x00\xff\xff"


class CodecClient:
    """A gateway client that checks the framing of its codec (``None``, zlib-stream, zstd-stream)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress
        self.frames: list[bytes] = []
        self._zstd = zstandard.ZstdDecompressor().decompressobj() if compress == "zstd-stream" else None
        self._zlib = zlib.decompressobj() if compress == "zlib-stream" else None
        self.seq: int | None = None

    def _decode(self, msg: aiohttp.WSMessage) -> dict[str, Any]:
        if self.compress is None:
            assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
            return json.loads(msg.data)  # type: ignore[no-any-return]
        assert msg.type is aiohttp.WSMsgType.BINARY, f"expected a binary frame, got {msg.type} {msg.data!r}"
        frame: bytes = msg.data
        self.frames.append(frame)
        if self._zstd is not None:
            text = self._zstd.decompress(frame)
            assert not self._zstd.eof, "the server ended the zstd frame"
        else:
            assert self._zlib is not None and frame.endswith(ZLIB_SUFFIX)
            text = self._zlib.decompress(frame)
        # The frame alone holds one whole message: it parses without waiting for the next frame.
        return json.loads(text)  # type: ignore[no-any-return]

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        payload = self._decode(await self.ws.receive(timeout=timeout))
        if payload.get("s") is not None:
            self.seq = payload["s"]
        return payload

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_str(json.dumps({"op": op, "d": d}))

    async def ready(self, shard: tuple[int, int] = (0, 1)) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """HELLO, IDENTIFY, READY and every GUILD_CREATE it announces."""
        hello = await self.recv()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 30_000
        await self.send(2, {"token": TOKEN, "intents": INTENTS, "shard": list(shard), "large_threshold": 250,
                            "properties": {"os": "linux", "browser": "test", "device": "test"}})
        ready = await self.recv()
        assert ready["t"] == "READY" and ready["s"] == 1, ready
        creates = [await self.recv() for _ in ready["d"]["guilds"]]
        assert [c["t"] for c in creates] == ["GUILD_CREATE"] * len(creates)
        assert [c["d"]["id"] for c in creates] == [g["id"] for g in ready["d"]["guilds"]]
        return ready, creates


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    config = SimConfig(port=0, guilds=12, members_per_guild=5, shards=1, token=TOKEN, heartbeat_interval_ms=30_000,
                       identify_window=0.01, max_concurrency=1)
    async with SimulatorServer(config) as server:
        yield server


async def _connect(http: aiohttp.ClientSession, sim: SimulatorServer, compress: str | None) -> CodecClient:
    query = "?v=10&encoding=json" + (f"&compress={compress}" if compress else "")
    return CodecClient(await http.ws_connect(sim.gateway_url + query, max_msg_size=0), compress)


async def _sim_stats(http: aiohttp.ClientSession, sim: SimulatorServer) -> dict[str, Any]:
    async with http.get(sim.url + "/_sim/stats") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def test_zstd_stream_hello_identify_ready_and_guild_creates(http: aiohttp.ClientSession,
                                                                   sim: SimulatorServer) -> None:
    client = await _connect(http, sim, "zstd-stream")
    ready, creates = await client.ready()
    assert len(creates) == 12 and ready["d"]["shard"] == [0, 1]
    assert {c["d"]["id"] for c in creates} == {str(g.id) for g in sim.state.world.guilds}
    # One zstd frame for the connection: the header comes with HELLO, never again.
    assert client.frames[0].startswith(ZSTD_MAGIC)
    assert not any(f.startswith(ZSTD_MAGIC) for f in client.frames[1:])
    await client.send(1, client.seq)
    assert (await client.recv())["op"] == 11
    stats = await _sim_stats(http, sim)
    assert stats["connections_by_compress"] == {"none": 0, "zlib-stream": 0, "zstd-stream": 1}


async def test_zstd_stream_decodes_thousands_of_messages_one_frame_each(http: aiohttp.ClientSession,
                                                                        sim: SimulatorServer) -> None:
    client = await _connect(http, sim, "zstd-stream")
    _, creates = await client.ready()
    events = 3000
    async with http.post(sim.url + "/_sim/load", json={"kind": "message_create", "rate": 0, "count": events,
                                                       "target": "shard", "shard_id": 0}) as resp:
        assert resp.status == 202, await resp.text()
    first_seq = len(creates) + 2
    received = [await client.recv() for _ in range(events)]
    assert [m["t"] for m in received] == ["MESSAGE_CREATE"] * events
    # Every frame decoded to the next message: nothing lost, merged or split across frames.
    assert [m["s"] for m in received] == list(range(first_seq, first_seq + events))
    guild_ids = {c["d"]["id"] for c in creates}
    assert {m["d"]["guild_id"] for m in received} == guild_ids
    assert len(client.frames) == 1 + 1 + len(creates) + events
    # The stream shares one context: the load's repeated payloads cost a fraction of their JSON.
    raw = sum(len(json.dumps(m, separators=(",", ":"))) for m in received)
    assert sum(len(f) for f in client.frames[-events:]) < raw / 4


async def test_resume_over_zstd_starts_a_new_stream(http: aiohttp.ClientSession, sim: SimulatorServer) -> None:
    gateway = sim.state.gateway
    client = await _connect(http, sim, "zstd-stream")
    ready, creates = await client.ready()
    guild_id = int(creates[0]["d"]["id"])
    await client.ws.close(code=4000)  # resumable
    await wait_for(lambda: not gateway.live_shards(), message="the session to detach")
    assert gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": "missed"})
    again = await _connect(http, sim, "zstd-stream")
    assert (await again.recv())["op"] == 10
    await again.send(6, {"token": TOKEN, "session_id": ready["d"]["session_id"], "seq": client.seq})
    missed = await again.recv()
    assert missed["d"]["content"] == "missed" and missed["s"] == (client.seq or 0) + 1
    assert (await again.recv())["t"] == "RESUMED"
    assert again.frames[0].startswith(ZSTD_MAGIC)  # a new connection, a new zstd frame
    assert sim.state.stats.connections_by_compress["zstd-stream"] == 2


@pytest.mark.parametrize("compress", [None, "zlib-stream"])
async def test_zlib_stream_and_plain_text_still_work(http: aiohttp.ClientSession, sim: SimulatorServer,
                                                     compress: str | None) -> None:
    client = await _connect(http, sim, compress)
    _, creates = await client.ready()
    assert len(creates) == 12
    guild_id = int(creates[0]["d"]["id"])
    for i in range(50):
        assert sim.state.gateway.dispatch_guild(guild_id, "MESSAGE_CREATE", {"content": f"m{i}"})
    assert [(await client.recv())["d"]["content"] for _ in range(50)] == [f"m{i}" for i in range(50)]
    if compress == "zlib-stream":
        assert all(f.endswith(ZLIB_SUFFIX) for f in client.frames) and len(client.frames) == 1 + 1 + 12 + 50
    expected = {"none": 0, "zlib-stream": 0, "zstd-stream": 0} | {compress or "none": 1}
    assert (await _sim_stats(http, sim))["connections_by_compress"] == expected


async def test_stats_count_connections_by_codec_and_reset(http: aiohttp.ClientSession, sim: SimulatorServer) -> None:
    clients = [await _connect(http, sim, c) for c in ("zstd-stream", "zstd-stream", "zlib-stream", None)]
    for client in clients:
        assert (await client.recv())["op"] == 10
    # An unknown codec is refused with 4002 (Discord's docs are silent on it) and counts nowhere.
    refused = await http.ws_connect(sim.gateway_url + "?v=10&encoding=json&compress=gzip")
    msg = await refused.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4002 and "zstd-stream" in msg.extra
    stats = await _sim_stats(http, sim)
    assert stats["connections_by_compress"] == {"none": 1, "zlib-stream": 1, "zstd-stream": 2}
    async with http.post(sim.url + "/_sim/reset-stats", json={}) as resp:
        assert resp.status == 200
    assert (await _sim_stats(http, sim))["connections_by_compress"] == {"none": 0, "zlib-stream": 0,
                                                                       "zstd-stream": 0}
