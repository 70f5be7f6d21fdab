"""The foundation end to end: a real simulator process, a real discord.py bot, real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from discord.http import HTTPClient, handle_message_parameters

from innkeeper.settings import PROJECT_ROOT
from shard.urls import point_discord_at
from tests.e2e.commands import BotFactory
from tests.procs import SIM_TOKEN, Proc, SimulatorProc, bot_api, http_json, spawn, start_simulator
from tests.support import wait_for, wait_for_sync

pytestmark = pytest.mark.e2e


async def test_every_guild_arrives_on_its_shard(tmp_path: Path, start_bot: BotFactory) -> None:
    with start_simulator(tmp_path, guilds=200, shards=4, max_concurrency=4, identify_window=0.2) as sim:
        bot = await start_bot(sim, shard_ids=[0, 1, 2, 3], shard_count=4)
        world = sim.world(limit=1000)["guilds"]
        assert len(world) == 200
        await wait_for(lambda: len(bot.guilds) == 200, timeout=30, message="200 guilds in the cache")
        expected = {int(g["id"]): g["shard_id"] for g in world}
        got = {g.id: g.shard_id for g in bot.guilds}
        assert got == expected
        assert all(shard == (gid >> 22) % 4 for gid, shard in got.items())
        assert {s for s in got.values()} == {0, 1, 2, 3}
        # each guild has its channels and the bot as a member
        g0 = bot.get_guild(int(world[0]["id"]))
        assert g0 is not None and g0.text_channels and g0.me is not None
        stats = sim.stats()
        assert stats["identify_violations"] == 0
        assert stats["identifies"] == 4


async def test_slash_ping_returns_the_bots_callback(sim, start_bot: BotFactory) -> None:  # type: ignore[no-untyped-def]
    await start_bot(sim, shard_ids=[0, 1], shard_count=2)
    guild = sim.world(limit=1)["guilds"][0]
    body = {"guild_id": guild["id"], "channel_id": guild["channels"][0], "user_id": guild["members"][0],
            "name": "ping", "options": [], "timeout": 10}
    status, reply = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/interactions", body)
    assert status == 200, reply
    callback = reply["callback"]
    assert callback["type"] == 4  # CHANNEL_MESSAGE_WITH_SOURCE
    assert callback["data"]["content"].startswith("Pong!")
    assert f"shard {guild['shard_id']}" in callback["data"]["content"]
    assert reply["latency_ms"] >= 0
    assert sim.stats()["acknowledged"] >= 1


async def test_prefix_ping_gets_a_reply_message(sim, start_bot: BotFactory) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot(sim, shard_ids=[0, 1], shard_count=2)
    guild = sim.world(limit=1)["guilds"][0]
    channel = guild["channels"][0]
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": guild["id"], "channel_id": channel, "author_id": guild["members"][0], "content": "!ping"})
    assert status == 200, posted

    async def reply() -> dict[str, object] | None:
        code, messages = await asyncio.to_thread(bot_api, sim, "GET", f"/api/v10/channels/{channel}/messages?limit=10")
        assert code == 200, messages
        for m in messages:
            if m["author"]["id"] == str(bot.user.id) and str(m["content"]).startswith("Pong!"):  # type: ignore[union-attr]
                return m  # type: ignore[no-any-return]
        return None

    message = await wait_for(reply, timeout=15, message="the bot's Pong! in the channel")
    assert int(message["id"]) > int(posted["id"])  # type: ignore[call-overload]


def test_uncoordinated_processes_are_caught(tmp_path: Path) -> None:
    """Two plain discord.py processes identifying at once in one bucket trip the simulator.

    One runs as installed (zstd-stream), the other with zstd hidden (zlib-stream): both come up.
    """
    with start_simulator(tmp_path, guilds=40, shards=4, max_concurrency=1, identify_window=1.0) as sim:
        script = str(PROJECT_ROOT / "tests" / "e2e" / "naive_bot.py")
        runs: list[tuple[tuple[str, ...], str]] = [((), "0,1"), (("--no-zstd",), "2,3")]
        procs: list[Proc] = [
            spawn(f"naive-{i}", [script, *flags, sim.url, SIM_TOKEN, ids, "4"], tmp_path)
            for i, (flags, ids) in enumerate(runs)
        ]
        try:
            wait_for_sync(lambda: sim.stats()["identify_violations"] > 0, timeout=30,
                          message="an identify violation")
            # discord.py recovers from op 9 by re-identifying: both processes still come up.
            wait_for_sync(lambda: all("READY" in p.output() for p in procs), timeout=60,
                          message="both naive processes READY")
            assert all(p.alive() for p in procs)
            assert "compress=zstd-stream" in procs[0].output() and "compress=zlib-stream" in procs[1].output()
            by_codec = sim.stats()["connections_by_compress"]
            assert by_codec["zstd-stream"] >= 2 and by_codec["zlib-stream"] >= 2 and by_codec["none"] == 0
        finally:
            for p in procs:
                p.stop()


async def _send_all(client: HTTPClient, sends: list[tuple[int, str]]) -> list[str]:
    async def one(channel_id: int, content: str) -> str:
        with handle_message_parameters(content=content) as params:
            msg = await client.send_message(channel_id, params=params)
        return str(msg["content"])
    return list(await asyncio.gather(*(one(c, t) for c, t in sends)))


async def test_rest_bursts_earn_429s_that_discord_py_rides_out(tmp_path: Path) -> None:
    """Plain discord.py limits per process and has no pre-emptive global limit: both show as 429s."""
    with start_simulator(tmp_path, guilds=50, shards=1, extra_args=("--global-rate", "20")) as sim:
        await _bursts(sim)


async def _bursts(sim: SimulatorProc) -> None:
    point_discord_at(sim.url)
    clients = [HTTPClient(asyncio.get_running_loop()) for _ in range(2)]
    try:
        for c in clients:
            await c.static_login(SIM_TOKEN)
        world = sim.world(limit=50)["guilds"]
        one_channel = int(world[0]["channels"][0])
        # Two "processes" share one channel's 5-per-5-s bucket: each believes it has it alone.
        per_client = [[(one_channel, f"c{i} m{j}") for j in range(6)] for i in range(2)]
        results = await asyncio.gather(*(_send_all(c, s) for c, s in zip(clients, per_client, strict=True)))
        assert results == [[t for _, t in s] for s in per_client]  # every message arrived, in order per client
        after_user = sim.stats()["rate_limited"]["user"]
        assert after_user > 0
        # One process bursting across 50 channels passes the bot-wide global limit (20/s here).
        channels = [int(g["channels"][0]) for g in world]
        assert len(channels) == 50
        sent = await _send_all(clients[0], [(c, "global burst") for c in channels])
        assert sent == ["global burst"] * 50
        stats = sim.stats()
        assert stats["rate_limited"]["global"] > 0
        assert stats["rate_limited"]["user"] >= after_user
    finally:
        for c in clients:
            await c.close()
