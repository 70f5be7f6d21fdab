"""Unmodified discord.py and the simulator's delivery books: what a RESUME replays is counted as replayed,
nothing is lost, and a silent (zombie) socket is noticed by discord.py itself, which resumes.

The client runs in this process; the simulator too. A killed process (nothing resumes, the buffered
events are lost after the window) is in ``tests/e2e/test_sim_delivery.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.support import running_client, wait_for

pytestmark = pytest.mark.integration

TOKEN = "dpy-token"


@pytest.fixture
def point_at() -> Iterator[Any]:
    """Point discord.py's REST base and default gateway at a simulator (restored after the test)."""
    with pytest.MonkeyPatch.context() as mp:
        def point(sim: SimulatorServer) -> None:
            mp.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
            mp.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        yield point


def _client(seen: list[str], **options: Any) -> discord.Client:
    intents = discord.Intents.default()
    intents.message_content = True
    client = discord.Client(intents=intents, **options)

    async def on_message(message: discord.Message) -> None:
        seen.append(message.content)

    client.event(on_message)
    return client


async def _post_message(http: aiohttp.ClientSession, sim: SimulatorServer, content: str) -> None:
    guild = sim.state.world.guilds[0]
    body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
            "author_id": str(guild.member_ids[0]), "content": content}
    async with http.post(sim.url + "/_sim/messages", json=body) as resp:
        assert resp.status == 200 and (await resp.json())["delivered"] is True


async def _stats(http: aiohttp.ClientSession, sim: SimulatorServer) -> dict[str, Any]:
    async with http.get(sim.url + "/_sim/stats") as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def test_what_discord_py_resumes_is_counted_replayed_and_nothing_is_lost(
        point_at: Any, http: aiohttp.ClientSession) -> None:
    config = SimConfig(port=0, guilds=6, guild_sizes="fixed", members_per_guild=3, token=TOKEN, resume_ttl=2.0)
    async with SimulatorServer(config) as sim:
        point_at(sim)
        seen: list[str] = []
        client = _client(seen)
        gateway = sim.state.gateway
        async with running_client(client, TOKEN):
            [session] = list(gateway.sessions)
            assert gateway.apply_fault("disconnect", 0, resumable=True, code=4000) == 1
            # Posted while the socket is closing: it waits in the session's buffer for discord.py's RESUME.
            await _post_message(http, sim, "while you were away")
            await wait_for(lambda: seen == ["while you were away"], timeout=30, message="the missed message")
            await _post_message(http, sim, "back again")
            await wait_for(lambda: seen[-1:] == ["back again"], timeout=10, message="a live message")
            stats = await _stats(http, sim)
            [report] = [s for s in stats["sessions"] if s["session_id"] == session.session_id]
            assert report["state"] == "live" and report["resumes"] == 1
            assert report["buffered"] >= 1 and report["replayed"] >= 1 and report["lost"] == 0
            assert stats["resumes"] == 1 and stats["identifies"] == 1
            assert stats["lost"] == 0 and stats["pending"] == 0 and stats["replayed"] == report["replayed"]
            assert report["acked_seq"] <= report["written_seq"] == report["seq"]


async def test_discord_py_notices_a_silent_socket_and_resumes_what_it_missed(
        point_at: Any, http: aiohttp.ClientSession) -> None:
    """The ``silent`` fault: no ACKs, no dispatches, the socket open. discord.py's own zombie check
    (``heartbeat_timeout``: nothing received for that long) closes it with 4000 and RESUMEs."""
    config = SimConfig(port=0, guilds=6, guild_sizes="fixed", members_per_guild=3, token=TOKEN,
                       heartbeat_interval_ms=500)
    async with SimulatorServer(config) as sim:
        point_at(sim)
        seen: list[str] = []
        client = _client(seen, heartbeat_timeout=2.0)
        gateway, stats = sim.state.gateway, sim.state.stats
        async with running_client(client, TOKEN):
            async with http.post(sim.url + "/_sim/faults", json={"kind": "silent", "shard_id": 0}) as resp:
                assert (await resp.json())["applied"] == 1
            await _post_message(http, sim, "into the void")
            await wait_for(lambda: seen == ["into the void"], timeout=30, message="the message, after a RESUME")
            assert stats.resumes == 1 and stats.identifies == 1 and stats.shards[0].closes[4000] == 1
            assert stats.replayed >= 1 and stats.lost == 0 and stats.heartbeat_timeouts == 0
            assert gateway.live_shards() == {0: 1}
