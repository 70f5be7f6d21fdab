"""A restarted cluster's resume, against a real Redis: the rebuilt guild cache, the fall-back to
identify, discord.py's readiness after resumed shards, and the session keeper's saves and clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
import redis.asyncio as aioredis
from discord.ext import commands

from ipc.keys import Keys
from ipc.sessions import SessionInfo, SessionStore
from ipc.snapshots import GuildSnapshotStore
from shard.resume import RESTART_RESUMES, Resumer
from shard.session_keeper import RESUMABLE_CLOSE_CODE, SessionKeeper
from shard.snapshots import snapshot_from_guild
from shard.tracker import ShardTracker

pytestmark = pytest.mark.integration

BOT_ID = 4242
#: (id >> 22) % 2 == 0 and (id >> 22) % 3 == 1: shard 0 of 2, but shard 1 of 3.
GUILD_ID = 4 << 22
#: (id >> 22) % 2 == 1: shard 1 of 2.
OTHER_GUILD_ID = (5 << 22) + 7
MOD_ROLE = 700


def guild_payload(guild_id: int) -> dict[str, Any]:
    return {
        "id": str(guild_id), "name": f"guild {guild_id}", "icon": None, "owner_id": "5", "member_count": 77,
        "channels": [{"id": str(guild_id + 1), "type": 0, "name": "general", "position": 0},
                     {"id": str(guild_id + 2), "type": 2, "name": "voice", "position": 1, "bitrate": 96000,
                      "user_limit": 5}],
        "roles": [{"id": str(guild_id), "name": "@everyone", "position": 0, "permissions": "1024"},
                  {"id": str(MOD_ROLE), "name": "bot role", "position": 1, "permissions": "8192"}],
        "members": [{"user": {"id": str(BOT_ID), "username": "innkeeper", "discriminator": "0", "avatar": None,
                              "bot": True},
                     "roles": [str(MOD_ROLE)], "joined_at": "2024-05-01T10:00:00+00:00", "deaf": False,
                     "mute": False, "flags": 0}],
    }


def new_bot(shard_count: int = 2) -> commands.AutoShardedBot:
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default(), shard_count=shard_count,
                                  member_cache_flags=discord.MemberCacheFlags.none())
    state: Any = bot._connection
    state.user = discord.ClientUser(state=state, data={"id": str(BOT_ID), "username": "innkeeper",
                                                       "discriminator": "0", "avatar": None, "bot": True})
    state.shard_count = shard_count
    state.shard_ids = list(range(shard_count))
    return bot


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    yield c
    await c.aclose()


async def saved_snapshots(client: aioredis.Redis, keys: Keys, *guild_ids: int) -> GuildSnapshotStore:
    """Snapshots as the old process saved them: built from discord.py's cache of the guilds."""
    store = GuildSnapshotStore(client, keys, ttl=60)
    old = new_bot()
    for gid in guild_ids:
        old._connection._add_guild_from_data(guild_payload(gid))  # type: ignore[arg-type]
    await store.save_many([snapshot_from_guild(g) for g in old.guilds])
    return store


async def test_guilds_are_rebuilt_with_channels_roles_and_the_bots_own_member(client: aioredis.Redis,
                                                                             redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    snapshots = await saved_snapshots(client, keys, GUILD_ID, OTHER_GUILD_ID)
    resumer = Resumer(SessionStore(client, keys), snapshots, ShardTracker([0, 1]))
    bot = new_bot()
    assert await resumer.rehydrate(bot, 0) == 1
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and bot.get_guild(OTHER_GUILD_ID) is None  # shard 1's guild waits for shard 1
    assert (guild.name, guild.member_count, guild.shard_id) == (f"guild {GUILD_ID}", 77, 0)
    voice = guild.get_channel(GUILD_ID + 2)
    assert isinstance(voice, discord.VoiceChannel) and (voice.bitrate, voice.user_limit) == (96000, 5)
    assert isinstance(guild.get_channel(GUILD_ID + 1), discord.TextChannel)
    me = guild.me
    assert me is not None and me.id == BOT_ID and [r.id for r in me.roles[1:]] == [MOD_ROLE]
    assert me.guild_permissions.manage_messages and me.guild_permissions.view_channel
    assert await resumer.rehydrate(bot, 0) == 0  # a guild already known is left as it is
    assert await resumer.rehydrate(bot, 1) == 1


async def test_snapshots_of_another_shard_count_are_not_used(client: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    snapshots = GuildSnapshotStore(client, keys, ttl=60)
    old = new_bot(3)
    old._connection._add_guild_from_data(guild_payload(GUILD_ID))  # type: ignore[arg-type]
    await snapshots.save_many([snapshot_from_guild(g) for g in old.guilds])  # shard 1 of 3
    resumer = Resumer(SessionStore(client, keys), snapshots, ShardTracker([0, 1]))
    bot = new_bot(2)
    assert await resumer.rehydrate(bot, 1) == 0 and bot.get_guild(GUILD_ID) is None


async def test_a_shard_without_snapshots_identifies_instead_of_resuming_blind(client: aioredis.Redis,
                                                                            redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    tracker = ShardTracker([0, 1])
    resumer = Resumer(SessionStore(client, keys), GuildSnapshotStore(client, keys, ttl=60), tracker)
    before = RESTART_RESUMES.labels("no_snapshot")._value.get()
    info = SessionInfo(0, 2, "abc", 12, "ws://127.0.0.1:9/never-connected")
    assert await resumer.connect(new_bot(), info) is None
    assert RESTART_RESUMES.labels("no_snapshot")._value.get() == before + 1


async def test_resumed_shards_make_the_bot_ready_as_a_cold_start_would() -> None:
    bot = new_bot()
    await bot._async_setup_hook()  # what login() does first: the loop and the ready event
    readies: list[str] = []

    async def on_ready() -> None:
        readies.append("ready")
    bot.add_listener(on_ready, "on_ready")
    resumer = Resumer(None, None, ShardTracker([0, 1]))  # type: ignore[arg-type]
    resumer._pending.update({0, 1})
    resumer.note_resumed(bot, 0)
    assert not bot.is_ready()  # shard 1 has not resumed yet
    resumer.note_resumed(bot, 5)  # not one of the resumes of this start: ignored
    resumer.note_resumed(bot, 1)
    await asyncio.wait_for(bot.wait_until_ready(), timeout=5)
    await asyncio.sleep(0)  # on_ready runs as a task of its own
    assert readies == ["ready"]


class FakeWebSocket:
    """The three fields of discord.py's ``DiscordWebSocket`` a session is, and its ``close``."""

    def __init__(self, session_id: str, sequence: int) -> None:
        self.session_id, self.sequence, self.gateway = session_id, sequence, "ws://127.0.0.1:1/resume"
        self.closed_with: int | None = None

    async def close(self, code: int = 4000) -> None:
        self.closed_with = code


class FakeShard:
    def __init__(self, ws: FakeWebSocket) -> None:
        self.ws, self.reading = ws, True

    def _cancel_task(self) -> None:
        self.reading = False


class FakeBot:
    shard_count = 2

    def __init__(self, shards: dict[int, FakeShard]) -> None:
        self.shards = shards

    def get_shard(self, shard_id: int) -> Any:
        shard = self.shards.get(shard_id)
        return None if shard is None else type("Info", (), {"_parent": shard})()


async def test_keeper_saves_what_changed_and_parks_exactly(client: aioredis.Redis, redis_prefix: str) -> None:
    store = SessionStore(client, Keys(redis_prefix))
    shards = {0: FakeShard(FakeWebSocket("s0", 10)), 1: FakeShard(FakeWebSocket("s1", 20))}
    tracker = ShardTracker([0, 1])
    tracker.bot = FakeBot(shards)  # type: ignore[assignment]
    keeper = SessionKeeper(tracker, store, interval_s=0.05)
    assert await keeper.save_changed() == 2
    assert await keeper.save_changed() == 0  # nothing changed
    shards[1].ws.sequence = 25
    assert await keeper.save_changed() == 1
    assert (await store.load(1, 2)).sequence == 25  # type: ignore[union-attr]
    shards[0].ws.sequence = 11  # read after the last periodic save: only the clean stop saves it
    assert await keeper.park() == 2
    assert all(not s.reading and s.ws.closed_with == RESUMABLE_CLOSE_CODE for s in shards.values())
    saved = await store.load_many([0, 1], 2)
    assert (saved[0].sequence, saved[0].session_id, saved[1].sequence) == (11, "s0", 25)
    assert tracker.stopping


async def test_park_with_redis_gone_still_closes_and_does_not_raise() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    shard = FakeShard(FakeWebSocket("s0", 3))
    tracker = ShardTracker([0])
    tracker.bot = FakeBot({0: shard})  # type: ignore[assignment]
    keeper = SessionKeeper(tracker, SessionStore(dead, Keys("nowhere")))
    assert await keeper.park() == 0
    assert shard.ws.closed_with == RESUMABLE_CLOSE_CODE and not shard.reading
    await dead.aclose()
