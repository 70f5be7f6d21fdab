"""The simulated world: deterministic ids, even shard routing, complete payloads discord.py parses."""

from __future__ import annotations

import json
import time
from collections import Counter

import discord
import pytest

from simulator.config import SimConfig
from simulator.snowflakes import shard_for
from simulator.world import World
from simulator.world_model import CHANNEL_TEXT

DISCORD_EPOCH_MS = 1_420_070_400_000


def _world(**kw: object) -> World:
    kw.setdefault("guild_sizes", "fixed")
    return World(SimConfig(**kw))  # type: ignore[arg-type]


def test_same_seed_same_world_and_different_seed_different_ids() -> None:
    a, b, c = _world(guilds=50, seed=7), _world(guilds=50, seed=7), _world(guilds=50, seed=8)
    assert [g.id for g in a.guilds] == [g.id for g in b.guilds]
    assert [g.member_ids for g in a.guilds] == [g.member_ids for g in b.guilds]
    assert [[ch.id for ch in g.channels] for g in a.guilds] == [[ch.id for ch in g.channels] for g in b.guilds]
    assert a.application_id == b.application_id
    assert a.guild_create_payload(a.guilds[3]) == b.guild_create_payload(b.guilds[3])
    assert {g.id for g in a.guilds}.isdisjoint(g.id for g in c.guilds)
    assert a.guilds[0].member_ids != c.guilds[0].member_ids
    assert a.application_id != c.application_id


def test_ids_are_sorted_unique_snowflakes_spread_over_years() -> None:
    world = _world(guilds=500)
    ids = [g.id for g in world.guilds]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    years = {time.gmtime(((i >> 22) + DISCORD_EPOCH_MS) / 1000).tm_year for i in ids}
    assert len(years) >= 6, years
    every_channel = [ch.id for g in world.guilds for ch in g.channels]
    every_role = [r.id for g in world.guilds for r in g.roles[1:]]
    assert len(set(every_channel + every_role + ids)) == len(every_channel) + len(every_role) + len(ids)


def test_routing_spreads_guilds_evenly_over_shards() -> None:
    world = _world(guilds=1000)
    counts = Counter(shard_for(g.id, 8) for g in world.guilds)
    assert set(counts) == set(range(8))
    assert max(counts.values()) <= 2 * 1000 / 8
    for shard in range(8):
        on_shard = world.guilds_for_shard(shard, 8)
        assert len(on_shard) == counts[shard]
        assert all((g.id >> 22) % 8 == shard for g in on_shard)
    with pytest.raises(ValueError):
        world.guilds_for_shard(8, 8)
    # Huge counts are filtered, not tabled.
    big = 1_000_003
    owner = world.guilds[0]
    assert world.guilds_for_shard((owner.id >> 22) % big, big)[0] is owner


def test_channels_roles_and_members_of_a_guild() -> None:
    world = _world(guilds=30, members_per_guild=12, channels_per_guild=5)
    for guild in world.guilds:
        channels = guild.channels
        assert len(channels) == 5
        assert channels[0].type == CHANNEL_TEXT
        assert {ch.type for ch in channels} == {0, 2, 4}
        assert guild.roles[0].id == guild.id and guild.roles[0].name == "@everyone"
        members = guild.member_ids
        assert len(members) == len(set(members)) == 12
        assert world.application_id not in members
        assert guild.owner_id == members[0]
        for ch in channels:
            found = world.channel(ch.id)
            assert found is not None and found[0] is guild and found[1].id == ch.id
        for uid in members:
            assert world.is_member(guild, uid)
            member = world.member(guild.id, uid)
            assert member is not None and member["user"]["id"] == str(uid)
        bot = world.member(guild.id, world.application_id)
        assert bot is not None and bot["user"]["bot"] is True
    # Users are shared: some user is in more than one guild.
    seen = Counter(uid for g in world.guilds for uid in g.member_ids)
    assert max(seen.values()) > 1
    # Lookups of things that are not there.
    assert world.guild(world.guilds[0].id + 1) is None
    assert world.channel(world.guilds[0].id) is None
    assert world.user(12345) is None
    outsider = next(u for u in (world.user_id(i) for i in range(world.pool_size))
                    if not world.is_member(world.guilds[0], u))
    assert world.member(world.guilds[0].id, outsider) is None


def test_guild_create_parses_with_discord_py() -> None:
    world = _world(guilds=5, members_per_guild=8, channels_per_guild=4)
    client = discord.Client(intents=discord.Intents.all())
    state = client._connection
    state.user = discord.ClientUser(state=state, data=world.bot_user())  # type: ignore[arg-type]
    for g in world.guilds:
        payload = json.loads(json.dumps(world.guild_create_payload(g)))  # exactly what goes on the wire
        guild = discord.Guild(data=payload, state=state)
        assert guild.id == g.id and guild.name == g.name
        assert guild.member_count == g.member_count
        assert len(guild.members) == 9
        assert guild.me is not None and guild.me.bot
        assert guild.me.guild_permissions.send_messages
        assert guild.owner is not None and guild.owner.id == g.owner_id
        assert guild.text_channels[0].id == g.channels[0].id
        assert len(guild.channels) == 4 and len(guild.voice_channels) == 1 and len(guild.categories) == 1
        assert guild.default_role.id == g.id
        assert any(r.is_bot_managed() for r in guild.roles)
        assert guild.system_channel is not None and guild.system_channel.id == g.channels[0].id
        for member in guild.members:
            assert member.joined_at is not None
    user = discord.User(state=state, data=world.user(world.guilds[0].member_ids[0]))  # type: ignore[arg-type]
    assert not user.bot and user.global_name


def test_ten_thousand_guilds_build_fast() -> None:
    started = time.process_time()  # CPU time: what other processes on the machine do does not count
    world = _world(guilds=10_000)
    elapsed = time.process_time() - started
    assert len(world.guilds) == 10_000
    assert elapsed < 2.0, elapsed
    last = world.guilds[-1]
    assert world.guild(last.id) is last
