"""Automod end to end: unmodified discord.py, the whole cluster stack, the simulator, PostgreSQL.

A shard's events reach the bot in order and automod judges each message inside discord.py's parser,
so "the bot handled message B" (B deleted, or a command sent after it answered) proves that every
earlier message of that guild was judged too: the tests wait on such conditions, never on time.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from shard.automod.enforcement import may_delete
from shard.bot import ClusterBot
from tests.e2e.commands import CommandBotFactory, World, channel_messages, content_of, load_world, options, slash, sub
from tests.procs import SimulatorProc, bot_api, http_json
from tests.support import wait_for

pytestmark = pytest.mark.e2e

#: Seconds a guild's incidents are gathered into one notice: long enough for a burst's deletes.
WINDOW = {"INNKEEPER_AUTOMOD_LOG_WINDOW": "3"}
MANAGE_MESSAGES = 1 << 13
INVITE = "come hang out: https://discord.gg/innkeeper"


async def post(sim: SimulatorProc, world: World, user: str, content: str, channel: str | None = None) -> str:
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": world.guild_id, "channel_id": channel or world.channel_id, "author_id": user,
        "content": content})
    assert status == 200, posted
    return str(posted["id"])


async def setting(sim: SimulatorProc, world: World, key: str, value: str) -> None:
    done = await slash(sim, world, world.owner, "settings", sub("set", options(key=key, value=value)))
    assert "is now" in content_of(done) or "cleared" in content_of(done), done


async def text_channel(sim: SimulatorProc, world: World) -> str:
    """A text channel of the guild other than the one the tests post in (the log channel)."""
    guild = next(g for g in sim.world(limit=50)["guilds"] if g["id"] == world.guild_id)
    for cid in guild["channels"][1:]:
        status, channel = await asyncio.to_thread(bot_api, sim, "GET", f"/api/v10/channels/{cid}")
        if status == 200 and channel["type"] == 0:
            return str(cid)
    raise AssertionError(f"guild {world.guild_id} has a single text channel")


async def ids_in(sim: SimulatorProc, channel: str) -> set[str]:
    return {m["id"] for m in await channel_messages(sim, channel, limit=100)}


async def notices(sim: SimulatorProc, channel: str) -> list[dict[str, Any]]:
    return [m for m in await channel_messages(sim, channel, limit=100)
            if m["author"].get("bot") and m["content"].startswith("🛡️ Automod")]


async def automod_rows(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT guild_id, action, actor_id, target_id, details FROM audit_log "
                                "WHERE action LIKE 'automod.%' ORDER BY id")
    finally:
        await conn.close()
    return [{"guild_id": r["guild_id"], "action": r["action"], "actor_id": r["actor_id"],
             "target_id": r["target_id"], "details": json.loads(r["details"])} for r in rows]


async def rows_when(dsn: str, count: int) -> list[dict[str, Any]] | None:
    rows = await automod_rows(dsn)
    return rows if len(rows) >= count else None


async def test_an_invite_is_deleted_at_medium_with_a_notice_and_an_audit_row(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bot = await command_bot(extra=WINDOW)
    log = await text_channel(sim, world)
    await setting(sim, world, "automod", "medium")
    await setting(sim, world, "log_channel", f"<#{log}>")
    member = world.members[0]
    chat = await post(sim, world, member, "just chatting, nothing to see")
    bad = await post(sim, world, member, INVITE)

    async def deleted() -> bool:
        ids = await ids_in(sim, world.channel_id)
        return bad not in ids and chat in ids
    await wait_for(deleted, timeout=15, message="the invite deleted, the chat kept")
    (notice,) = await wait_for(lambda: notices(sim, log), timeout=15, message="the log notice")
    assert notice["content"] == (f"🛡️ Automod deleted a message by <@{member}> in <#{world.channel_id}>: "
                                 "invite link.")
    assert notice["mentions"] == [] and notice["mention_roles"] == [] and not notice["mention_everyone"]
    (row,) = await wait_for(lambda: rows_when(migrated_db, 1), timeout=15, message="the audit row")
    assert row["action"] == "automod.invite_link" and row["guild_id"] == int(world.guild_id)
    assert row["actor_id"] == bot.user.id and row["target_id"] == int(member)  # type: ignore[union-attr]
    assert row["details"] == {"rule": "invite_link", "action": "delete", "count": 1,
                              "channel_ids": [int(world.channel_id)], "message_ids": [int(bad)]}


async def test_automod_off_and_exempt_moderators_are_left_alone(sim: SimulatorProc, migrated_db: str,
                                                                command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    await command_bot(extra=WINDOW)
    member = world.members[1]
    while_off = await post(sim, world, member, INVITE)
    # the interaction comes after the message on the same shard: once it is answered, the message was judged
    await setting(sim, world, "automod", "medium")
    by_moderator = await post(sim, world, world.moderator, INVITE)
    everyone_by_owner = await post(sim, world, world.owner, "@everyone meeting in five")
    caught = await post(sim, world, member, "@here look at this")

    async def handled() -> bool:
        return caught not in await ids_in(sim, world.channel_id)
    await wait_for(handled, timeout=15, message="the member's @here deleted")
    ids = await ids_in(sim, world.channel_id)
    assert {while_off, by_moderator, everyone_by_owner} <= ids
    (row,) = await wait_for(lambda: rows_when(migrated_db, 1), timeout=15, message="the audit row")
    assert (row["action"], row["target_id"], row["details"]["message_ids"]) == (
        "automod.everyone_mention", int(member), [int(caught)])


async def test_a_repeated_burst_at_high_deletes_the_repeats_with_one_notice(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    await command_bot(extra=WINDOW)
    log = await text_channel(sim, world)
    await setting(sim, world, "automod", "high")
    await setting(sim, world, "log_channel", f"<#{log}>")
    member = world.members[2]
    burst = [await post(sim, world, member, text) for text in
             ("FREE nitro, click my profile", "free nitro,  click my profile", *["free nitro, click my profile"] * 4)]
    other = await post(sim, world, world.members[3], "free nitro, click my profile")  # another author: no repeat

    async def repeats_gone() -> bool:
        ids = await ids_in(sim, world.channel_id)
        return not ids & set(burst[2:])
    await wait_for(repeats_gone, timeout=20, message="the 3rd to 6th copies deleted")
    assert {*burst[:2], other} <= await ids_in(sim, world.channel_id)
    # the audit row is written right after the notice, when the guild's window closes
    (row,) = await wait_for(lambda: rows_when(migrated_db, 1), timeout=20, message="the window's audit row")
    assert row["details"]["count"] == 4 and row["details"]["message_ids"] == [int(m) for m in burst[2:]]
    (notice,) = await notices(sim, log)
    assert notice["content"] == (f"🛡️ Automod deleted a message by <@{member}> in <#{world.channel_id}>: "
                                 "repeated message.\n… and 3 more (repeated message: 3 deleted).")


async def _refusals(sim: SimulatorProc) -> int:
    return int(sim.stats()["invalid_requests"])


async def test_without_manage_messages_a_refusal_is_asked_at_most_once(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bot = await command_bot(extra=WINDOW)
    await setting(sim, world, "automod", "medium")
    member = world.members[4]
    # Discord answers 403 although the cache says the bot may delete (a permission changed unseen)
    status, _ = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/faults", {
        "kind": "http_error", "route": "DELETE /messages/", "status": 403, "count": 10})
    assert status == 200
    before = await _refusals(sim)
    spam = [await post(sim, world, member, f"{INVITE} #{i}") for i in range(4)]
    rows = await wait_for(lambda: rows_when(migrated_db, 2), timeout=20, message="the window's audit rows")
    assert sorted((r["details"]["action"], r["details"]["count"]) for r in rows) == [("flag", 3), ("refused", 1)]
    _, faults = await asyncio.to_thread(http_json, "GET", sim.url + "/_sim/faults")
    assert [f["count"] for f in faults["rest_faults"]] == [9]  # one DELETE reached Discord
    assert await _refusals(sim) - before == 1
    assert set(spam) <= await ids_in(sim, world.channel_id)
    await asyncio.to_thread(http_json, "DELETE", sim.url + "/_sim/faults")

    # A channel where the bot lacks Manage Messages, as its cache knows: no request at all
    other = await load_world(sim, 1)
    await setting(sim, other, "automod", "medium")
    assert bot.user is not None
    status, _ = await asyncio.to_thread(http_json, "POST", sim.url + f"/_sim/channels/{other.channel_id}/overwrites",
                                        {"id": str(bot.user.id), "type": "member", "deny": str(MANAGE_MESSAGES)})
    assert status == 200
    await wait_for(lambda: _cache_denies(bot, other), timeout=10, message="the bot's cache sees the overwrite")
    before = await _refusals(sim)
    kept = await post(sim, other, other.members[0], INVITE)
    rows = await wait_for(lambda: rows_when(migrated_db, 3), timeout=20, message="the flag's audit row")
    assert (rows[-1]["details"]["action"], rows[-1]["details"]["message_ids"]) == ("flag", [int(kept)])
    assert await _refusals(sim) == before and kept in await ids_in(sim, other.channel_id)


def _cache_denies(bot: ClusterBot, world: World) -> bool:
    guild = bot.get_guild(int(world.guild_id))
    assert guild is not None
    return may_delete(guild, guild.get_channel(int(world.channel_id))) is False
