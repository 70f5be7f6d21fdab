"""Large guilds in the simulated world: realistic sizes, lazy members, Discord's GUILD_CREATE trimming, churn."""

from __future__ import annotations

import json
import statistics

import discord
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.config import SimConfig
from simulator.guild_traffic import GuildTraffic
from simulator.member_lists import member_json, members_json
from simulator.world import World

ALL = (1 << 26) - 1
NO_PRESENCES = ALL & ~(1 << 8)


def _world(**kw: object) -> World:
    return World(SimConfig(**kw))  # type: ignore[arg-type]


def test_realistic_sizes_have_a_long_tail_and_are_seeded() -> None:
    world = _world(guilds=10_000, members_per_guild=20, max_member_count=250_000, huge_guilds=3)
    counts = [g.member_count for g in world.guilds]
    assert counts == [g.member_count for g in _world(guilds=10_000, members_per_guild=20, huge_guilds=3).guilds]
    assert counts != [g.member_count for g in _world(guilds=10_000, members_per_guild=20, huge_guilds=3,
                                                     seed=2).guilds]
    humans = sorted(c - 1 for c in counts)
    assert 15 <= statistics.median(humans) <= 25  # the median guild has --members-per-guild humans
    assert sum(c < 100 for c in counts) / len(counts) > 0.85  # most guilds are small
    assert sum(c > 10_000 for c in counts) >= 4  # ... with a long tail
    assert counts.count(250_000) >= 3 and max(counts) == 250_000  # --huge-guilds, capped at --max-member-count
    assert min(counts) >= 2  # the owner and the bot
    assert world.pool_size >= 250_000


def test_fixed_sizes_keep_every_guild_at_members_per_guild() -> None:
    world = _world(guilds=50, guild_sizes="fixed", members_per_guild=7)
    assert {g.member_count for g in world.guilds} == {8}


def test_a_huge_guild_lists_distinct_members_that_invert() -> None:
    world = _world(guilds=20, max_member_count=250_000, huge_guilds=1)
    guild = max(world.guilds, key=lambda g: g.member_count)
    ids = guild.member_ids
    assert len(ids) == len(set(ids)) == guild.member_count - 1 == 249_999
    for k in (0, 1, 99, 100, 12_345, 249_998):
        assert world.member_position(guild, ids[k]) == k
        assert world.member(guild.id, ids[k]) is not None
    assert ids[0] == guild.owner_id
    other = next(g for g in world.guilds if g is not guild)
    outsider = next(u for u in other.member_ids if not world.is_member(guild, u))
    assert world.member_position(guild, outsider) is None


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0, max_value=4_999), seed=st.integers(min_value=1, max_value=50))
def test_fast_member_json_equals_the_reference_payload(position: int, seed: int) -> None:
    world = _world(guilds=5, seed=seed, max_member_count=5_000, huge_guilds=1)
    guild = max(world.guilds, key=lambda g: g.member_count)
    position %= guild.humans
    text, presence = member_json(world, guild, position)
    uid = guild.member_id(position)
    assert json.loads(text) == world.member(guild.id, uid)
    status = world.user_status(world.user_index(uid))  # type: ignore[arg-type]
    assert (presence is None) == (status == "offline")
    if presence is not None:
        assert json.loads(presence) == world.presence_payload(uid, status)


def test_statuses_and_roles_are_realistic_in_a_big_guild() -> None:
    world = _world(guilds=3, max_member_count=20_000, huge_guilds=1)
    guild = max(world.guilds, key=lambda g: g.member_count)
    members, presences, n = members_json(world, guild, range(guild.humans), bot_member=world._bot_member(guild),
                                         presences=True)
    assert n == guild.member_count
    online = json.loads(presences or "[]")
    assert 0.1 < len(online) / n < 0.25  # most users are offline
    with_roles = [m for m in json.loads(members)[100:-1] if m["roles"]]
    assert 0.02 < len(with_roles) / n < 0.1  # past the first hundred, few members have a role


@pytest.mark.parametrize(("intents", "threshold", "expect"), [
    (NO_PRESENCES, 250, "bot"),  # no GUILD_PRESENCES: the bot only, whatever the size
    (ALL, 250, "all"),  # a small guild with presences: everyone
    (ALL, 50, "online_or_role"),  # over large_threshold: the members online or with a role
])
def test_guild_create_members_follow_discords_rule(intents: int, threshold: int, expect: str) -> None:
    world = _world(guilds=400, guild_sizes="fixed", members_per_guild=120)
    guild = world.guilds[0]
    payload = json.loads(json.dumps(world.guild_create_payload(guild, intents, threshold)))
    assert payload["member_count"] == 121 and payload["large"] is (threshold < 121)
    ids = [m["user"]["id"] for m in payload["members"]]
    assert ids[-1] == str(world.application_id)
    online = {p["user"]["id"] for p in payload["presences"]}
    if expect == "bot":
        assert ids == [str(world.application_id)] and not online
    elif expect == "all":
        assert len(ids) == 121
    else:
        humans = payload["members"][:-1]
        assert 0 < len(humans) < 120
        assert all(m["roles"] or m["user"]["id"] in online for m in humans)
    assert online <= set(ids)


def test_guild_create_of_a_guild_over_75k_members_carries_only_the_bot() -> None:
    world = _world(guilds=3, max_member_count=80_000, huge_guilds=1)
    guild = max(world.guilds, key=lambda g: g.member_count)
    payload = world.guild_create_payload(guild, ALL, 250)
    assert [m["user"]["id"] for m in payload["members"]] == [str(world.application_id)]
    assert payload["member_count"] == 80_000 and payload["large"] is True


def test_a_big_guild_create_parses_with_discord_py() -> None:
    world = _world(guilds=3, max_member_count=3_000, huge_guilds=1)
    guild = max(world.guilds, key=lambda g: g.member_count)
    client = discord.Client(intents=discord.Intents.all())
    state = client._connection
    state.user = discord.ClientUser(state=state, data=world.bot_user())  # type: ignore[arg-type]
    payload = json.loads(json.dumps(world.guild_create_payload(guild, ALL, 250)))
    parsed = discord.Guild(data=payload, state=state)
    assert parsed.member_count == 3_000 and parsed.large and not parsed.chunked
    assert parsed.me is not None and len(parsed.members) == len(payload["members"])


def test_member_churn_keeps_member_count_and_lists_consistent() -> None:
    world = _world(guilds=30, members_per_guild=10)
    traffic = GuildTraffic(world, world.guilds, seed=3)
    before = {g.id: g.member_count for g in world.guilds}
    left: list[tuple[int, int]] = []
    joined: list[tuple[int, int]] = []
    for _ in range(200):
        kind = "guild_member_remove" if len(left) <= len(joined) else "guild_member_add"
        guild_id, event, d = traffic.next(kind)
        data = json.loads(d)
        assert data["guild_id"] == str(guild_id)
        uid = int(data["user"]["id"])
        if event != "GUILD_MEMBER_UPDATE":  # a remove that drew the owner, who never leaves
            (left if event == "GUILD_MEMBER_REMOVE" else joined).append((guild_id, uid))
        guild = world.guild(guild_id)
        assert guild is not None
        assert world.is_member(guild, uid) is (event != "GUILD_MEMBER_REMOVE")
    for g in world.guilds:
        gone = sum(1 for gid, _ in left if gid == g.id)
        came = sum(1 for gid, _ in joined if gid == g.id)
        assert g.member_count == before[g.id] - gone + came == len(g.member_ids) + 1


def test_traffic_is_spread_in_proportion_to_guild_size() -> None:
    world = _world(guilds=200, members_per_guild=20, max_member_count=50_000, huge_guilds=1)
    big = max(world.guilds, key=lambda g: g.member_count)
    share = big.member_count / sum(g.member_count for g in world.guilds)
    traffic = GuildTraffic(world, world.guilds, seed=1)
    hits = sum(traffic.next("presence_update")[0] == big.id for _ in range(5_000))
    assert abs(hits / 5_000 - share) < 0.05


@pytest.mark.parametrize(("intents", "threshold"), [(ALL, 250), (ALL, 50), (NO_PRESENCES, 250)])
def test_guild_create_json_equals_the_reference_payload(intents: int, threshold: int) -> None:
    world = _world(guilds=40, members_per_guild=60, max_member_count=2_000, huge_guilds=1)
    for guild in world.guilds:
        assert json.loads(world.guild_create_json(guild, intents, threshold)) == json.loads(
            json.dumps(world.guild_create_payload(guild, intents, threshold)))
