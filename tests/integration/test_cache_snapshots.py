"""GuildSnapshotStore against a real Redis, and snapshots that discord.py can rebuild a guild from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
import redis.asyncio as aioredis
from discord.state import ConnectionState

from innkeeper.errors import UsageError
from ipc.keys import Keys
from ipc.snapshots import GuildSnapshotStore
from shard.snapshots import snapshot_from_guild
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[GuildSnapshotStore]:
    client = aioredis.from_url(redis_url)
    yield GuildSnapshotStore(client, Keys(redis_prefix), ttl=60)
    await client.aclose()


def snap(guild_id: int, shard_id: int, **extra: Any) -> dict[str, Any]:
    return {"id": str(guild_id), "name": f"guild {guild_id}", "shard_id": shard_id, "member_count": 10,
            "channels": [{"id": str(guild_id + 1), "type": 0, "name": "general", "position": 0}],
            "roles": [{"id": str(guild_id), "name": "@everyone", "position": 0, "permissions": "0"}], **extra}


async def test_save_and_load_per_shard(store: GuildSnapshotStore) -> None:
    saved = await store.save_many([snap(g, g % 3) for g in range(1000, 1300)])
    assert saved == 300
    shard1 = await store.load_shard(1)
    assert [int(s["id"]) for s in shard1] == [g for g in range(1000, 1300) if g % 3 == 1]
    assert shard1[0] == snap(1000 + (1 - 1000 % 3) % 3, 1)
    assert await store.load(1003) == snap(1003, 1003 % 3)
    assert await store.load(999) is None
    assert await store.load_shard(7) == []


async def test_moved_deleted_and_expired_snapshots_leave_the_index(store: GuildSnapshotStore,
                                                                     redis_url: str, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    await store.save_many([snap(10, 0), snap(11, 0), snap(12, 0)])
    await store.save(snap(11, 1))  # resharded: guild 11 moved to shard 1
    await store.delete(12, 0)
    assert [s["id"] for s in await store.load_shard(0)] == ["10"]
    assert [s["id"] for s in await store.load_shard(1)] == ["11"]
    client = aioredis.from_url(redis_url)
    try:
        assert await client.smembers(keys.shard_snapshot_index(0)) == {b"10"}  # 11 pruned
        short = GuildSnapshotStore(client, keys, ttl=0.1)
        await short.save(snap(20, 2))

        async def expired() -> bool:
            return not await client.exists(keys.guild_snapshot(20))

        await wait_for(expired, timeout=5, message="the short-lived snapshot to expire in Redis")
        assert await store.load_shard(2) == []  # the index does not hand out an expired snapshot
        assert await client.pttl(keys.guild_snapshot(10)) > 50_000  # ttl applied
    finally:
        await client.aclose()


async def test_bad_snapshots_are_refused(store: GuildSnapshotStore) -> None:
    with pytest.raises(UsageError, match="id"):
        await store.save({"name": "no id", "shard_id": 0})
    with pytest.raises(UsageError, match="shard_id"):
        await store.save({"id": "5", "name": "no shard"})
    with pytest.raises(UsageError, match="plain"):
        await store.save({"id": "5", "shard_id": 0, "obj": object()})


async def test_snapshot_from_guild_rebuilds_in_discord_py(store: GuildSnapshotStore) -> None:
    state = ConnectionState(dispatch=lambda *a, **k: None, handlers={}, hooks={}, http=None,  # type: ignore[arg-type]
                            intents=discord.Intents.default())
    payload = {
        "id": "81384788765712384", "name": "The Tavern", "icon": None, "owner_id": "5", "member_count": 1234,
        "channels": [
            {"id": "100", "type": 4, "name": "Hall", "position": 0},
            {"id": "101", "type": 0, "name": "bar", "position": 1, "parent_id": "100", "topic": "drinks",
             "nsfw": True, "permission_overwrites": [{"id": "81384788765712384", "type": 0, "allow": "1024",
                                                      "deny": "2048"}]},
        ],
        "roles": [{"id": "81384788765712384", "name": "@everyone", "position": 0, "permissions": "104324673",
                   "color": 0, "hoist": False, "mentionable": False, "managed": False},
                  {"id": "7", "name": "keeper", "position": 1, "permissions": "8",
                   "colors": {"primary_color": 16711680, "secondary_color": 255, "tertiary_color": None},
                   "hoist": True, "mentionable": True, "managed": False}],
    }
    guild = discord.Guild(data=payload, state=state)
    snapshot = snapshot_from_guild(guild)
    await store.save(snapshot)
    (loaded,) = await store.load_shard(guild.shard_id)
    rebuilt = discord.Guild(data=loaded, state=state)  # what the resume work will do
    assert (rebuilt.id, rebuilt.name, rebuilt.member_count, rebuilt.owner_id) == (guild.id, "The Tavern", 1234, 5)
    bar = rebuilt.get_channel(101)
    assert isinstance(bar, discord.TextChannel)
    assert (bar.topic, bar.nsfw, bar.category_id) == ("drinks", True, 100)
    overwrite = bar.overwrites_for(rebuilt.default_role)
    assert overwrite.read_messages is True and overwrite.send_messages is False
    keeper = rebuilt.get_role(7)
    assert keeper is not None and keeper.permissions.administrator and keeper.colour.value == 16711680
    assert keeper.secondary_colour is not None and keeper.secondary_colour.value == 255
    assert (keeper.hoist, keeper.mentionable) == (True, True)
