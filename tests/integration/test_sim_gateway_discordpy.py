"""Unmodified discord.py against the simulator: an AutoShardedBot connects two shards and sees every guild.

With ``zstandard`` installed (a main dependency) discord.py asks for ``compress=zstd-stream``; the
zlib-stream path is forced by handing discord.py its own zlib decompression context.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
import discord.utils
import pytest
import yarl
from discord.ext import commands

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.dpy_codecs import zlib_context, zstd_context
from tests.support import running_client, wait_for

TOKEN = "dpy-token"


async def test_autosharded_bot_connects_two_shards_sees_every_guild_and_resumes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = SimConfig(port=0, guilds=30, guild_sizes="fixed", members_per_guild=6, shards=2, max_concurrency=2,
                       identify_window=0.2, token=TOKEN)
    async with SimulatorServer(config) as sim:
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        intents = discord.Intents.default()
        intents.message_content = True
        bot = commands.AutoShardedBot(command_prefix="!", intents=intents)
        seen: list[discord.Message] = []
        resumed: list[int] = []

        async def on_message(message: discord.Message) -> None:
            seen.append(message)

        async def on_shard_resumed(shard_id: int) -> None:
            resumed.append(shard_id)

        bot.add_listener(on_message)
        bot.add_listener(on_shard_resumed)
        async with running_client(bot, TOKEN, what="the bot"):
            world, stats = sim.state.world, sim.state.stats
            assert bot.shard_count == 2
            assert sorted(g.id for g in bot.guilds) == [g.id for g in world.guilds]
            for g in world.guilds:
                guild = bot.get_guild(g.id)
                assert guild is not None and guild.shard_id == (g.id >> 22) % 2
                assert guild.me is not None and guild.text_channels[0].id == g.channels[0].id
            assert stats.identifies == 2 and stats.identify_violations == 0
            assert bot.user is not None and bot.user.id == world.application_id

            # A resumable drop: discord.py RESUMEs and gets what was dispatched meanwhile.
            target = next(g for g in world.guilds if (g.id >> 22) % 2 == 0)
            author = target.member_ids[0]
            assert sim.state.gateway.apply_fault("disconnect", 0, resumable=True, code=4000) == 1
            msg = {"id": str(sim.state.ids.next()), "channel_id": str(target.channels[0].id),
                   "guild_id": str(target.id), "author": world.user(author),
                   "member": _member(world, target.id, author),
                   "content": "while you were away", "timestamp": "2024-01-01T00:00:00+00:00",
                   "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
                   "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0,
                   "components": []}
            assert sim.state.gateway.dispatch_guild(target.id, "MESSAGE_CREATE", msg)
            await wait_for(lambda: 0 in resumed, timeout=30, message="shard 0 to resume")
            await wait_for(lambda: [m.content for m in seen] == ["while you were away"], timeout=10,
                           message="the missed message")
            assert seen[0].guild is not None and seen[0].guild.id == target.id
            assert stats.resumes == 1 and stats.identifies == 2
        await wait_for(lambda: not sim.state.gateway.live_shards(), message="the bot's sockets to close")


def _member(world: object, guild_id: int, user_id: int) -> dict[str, object]:
    member = world.member(guild_id, user_id)  # type: ignore[attr-defined]
    return {k: v for k, v in member.items() if k != "user"}


async def test_plain_client_with_members_intent_chunks_every_guild_completely(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Without GUILD_PRESENCES, GUILD_CREATE carries only the bot: discord.py chunks every guild, and the
    chunks add up to each guild's member_count, a 5,000-member guild included."""
    config = SimConfig(port=0, guilds=12, guild_sizes="realistic", members_per_guild=20, max_member_count=5_000,
                       huge_guilds=1, token=TOKEN)
    async with SimulatorServer(config) as sim:
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        intents = discord.Intents.default()
        intents.members = True
        client = discord.Client(intents=intents)  # not sharded: IDENTIFY without "shard"
        async with running_client(client, TOKEN, what="the client"):
            world, stats = sim.state.world, sim.state.stats
            assert max(g.member_count for g in world.guilds) == 5_000
            assert len(client.guilds) == 12
            for g in world.guilds:
                guild = client.get_guild(g.id)
                assert guild is not None and guild.chunked
                assert {m.id for m in guild.members} == {*g.member_ids, world.application_id}
            # READY + one GUILD_CREATE and ceil(member_count / 1000) chunks per guild.
            chunks = sum(-(-g.member_count // 1000) for g in world.guilds)
            assert stats.shards[0].dispatched == 1 + 12 + chunks == 1 + 12 + stats.member_chunks_sent
            assert stats.members_sent == sum(g.member_count for g in world.guilds)
            assert "timed out waiting for chunks" not in caplog.text


@pytest.mark.parametrize("codec", ["zstd-stream", "zlib-stream"])
async def test_both_codecs_reach_ready_with_every_guild_and_receive_events(monkeypatch: pytest.MonkeyPatch,
                                                                            codec: str) -> None:
    if codec == "zlib-stream":
        # What discord.py uses when no zstd package is importable: its URL then says zlib-stream.
        monkeypatch.setattr(discord.utils, "_ActiveDecompressionContext", zlib_context())
    else:
        assert discord.utils._ActiveDecompressionContext is zstd_context()  # type: ignore[attr-defined]
    config = SimConfig(port=0, guilds=20, members_per_guild=4, shards=2, max_concurrency=2, identify_window=0.05,
                       token=TOKEN)
    async with SimulatorServer(config) as sim, aiohttp.ClientSession() as http:
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        intents = discord.Intents.default()
        intents.message_content = True
        bot = commands.AutoShardedBot(command_prefix="!", intents=intents)
        seen: list[discord.Message] = []

        async def on_message(message: discord.Message) -> None:
            seen.append(message)

        bot.add_listener(on_message)
        async with running_client(bot, TOKEN, what=f"the bot over {codec}"):
            world, stats = sim.state.world, sim.state.stats
            assert sorted(g.id for g in bot.guilds) == [g.id for g in world.guilds]
            assert stats.connections_by_compress == {"none": 0, "zlib-stream": 0, "zstd-stream": 0} | {codec: 2}
            # One message into a guild of each shard, injected as a user would post it.
            targets = [next(g for g in world.guilds if (g.id >> 22) % 2 == shard) for shard in (0, 1)]
            for i, guild in enumerate(targets):
                body: dict[str, Any] = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
                                        "author_id": str(guild.member_ids[0]), "content": f"over {codec} {i}"}
                async with http.post(sim.url + "/_sim/messages", json=body) as resp:
                    assert resp.status == 200 and (await resp.json())["delivered"] is True
            await wait_for(lambda: len(seen) == 2, timeout=15, message="both messages")
            assert sorted(m.content for m in seen) == [f"over {codec} 0", f"over {codec} 1"]
            assert {m.guild.id for m in seen if m.guild is not None} == {g.id for g in targets}
        await wait_for(lambda: not sim.state.gateway.live_shards(), message="the bot's sockets to close")
