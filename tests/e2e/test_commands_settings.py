"""Settings and permissions end to end, including escalation attempts, prefix changes and audit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from tests.e2e.commands import (
    CommandBotFactory,
    World,
    channel_messages,
    content_of,
    is_ephemeral,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.procs import SimulatorProc, http_json
from tests.support import wait_for

pytestmark = pytest.mark.e2e


def role_opt(name: str, role_id: str) -> dict[str, object]:
    return {"name": name, "type": 8, "value": role_id}


async def audit_rows(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT action, actor_id, details FROM audit_log ORDER BY id")
    finally:
        await conn.close()
    return [{"action": r["action"], "actor_id": r["actor_id"], "details": json.loads(r["details"])} for r in rows]


async def _rows_when(dsn: str, count: int) -> list[dict[str, Any]] | None:
    rows = await audit_rows(dsn)
    return rows if len(rows) >= count else None


async def post(sim: SimulatorProc, world: World, user: str, content: str) -> str:
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": world.guild_id, "channel_id": world.channel_id, "author_id": user, "content": content})
    assert status == 200, posted
    return str(posted["id"])


async def test_prefix_setting_drives_prefix_commands(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    await command_bot()
    done = await slash(sim, world, world.owner, "settings", sub("set", options(key="prefix", value="?")))
    assert content_of(done) == "The prefix is now `?`.", done
    old = await post(sim, world, world.members[0], "!ping")
    reply = await prefix(sim, world, world.members[0], "?ping")
    assert reply["content"].startswith("Pong!")
    # the bot handles one shard's messages in order: "!ping" came first and got no answer
    bot_after_old = [m for m in await channel_messages(sim, world.channel_id)
                     if m["author"].get("bot") and int(old) < int(m["id"]) < int(reply["id"])]
    assert bot_after_old == []
    # the prefix form of a setting, then back to the default
    back = await prefix(sim, world, world.owner, "?settings set prefix reset")
    assert back["content"] == "The prefix is now `!`."
    assert (await prefix(sim, world, world.members[0], "!ping"))["content"].startswith("Pong!")
    shown = await slash(sim, world, world.owner, "settings", sub("show"))
    assert is_ephemeral(shown) and "prefix: `!` (default)" in content_of(shown)
    bad = await slash(sim, world, world.owner, "settings", sub("set", options(key="prefix", value="@everyone")))
    assert "E5001" in content_of(bad) and is_ephemeral(bad)
    bad_automod = await prefix(sim, world, world.owner, "!settings set automod extreme")
    assert "E5001" in bad_automod["content"] and "off, low, medium, high" in bad_automod["content"]


async def test_settings_are_refused_below_admin_and_audited(sim: SimulatorProc, migrated_db: str,
                                                            command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bot = await command_bot()
    refused = await slash(sim, world, world.members[0], "settings", sub("set", options(key="automod", value="high")))
    assert is_ephemeral(refused) and "needs the admin level; yours is everyone" in content_of(refused)
    ok = await slash(sim, world, world.owner, "settings", sub("set", options(key="automod", value="high")))
    assert content_of(ok) == "Automod is now high."
    # the action's entry is written right after the command answered...
    (done,) = await wait_for(lambda: _rows_when(migrated_db, 1), timeout=10, message="the action's audit entry")
    assert (done["action"], done["details"]["outcome"]) == ("command.settings.set", "ok")
    assert done["actor_id"] == int(world.owner) and done["details"]["args"] == {"key": "automod", "value": "high"}
    # ...the refused attempts once their window closes (here: at once), one entry with their count
    await bot.pipeline.denials.flush(everything=True)
    rows = await wait_for(lambda: _rows_when(migrated_db, 2), timeout=10, message="the refusals' audit entry")
    assert (rows[1]["action"], rows[1]["details"]["outcome"], rows[1]["details"]["attempts"]) == (
        "command.settings.set", "denied", 1)
    assert rows[1]["actor_id"] == int(world.members[0])


async def test_permission_levels_and_escalation_attempts(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    await command_bot(owners=(world.members[-1],))
    holder = next(u for u in world.with_member_role if u != world.members[-1])
    without = next(u for u in world.members if u not in world.with_member_role and u != world.members[-1])
    # a moderator cannot give a role admin, nor touch the admin role
    attempt = await slash(sim, world, world.moderator, "permissions",
                          sub("role", [role_opt("role", world.member_role), *options(level="admin")]))
    assert "above your own (mod)" in content_of(attempt) and "E5002" in content_of(attempt)
    # nobody grants owner, not even a bot owner
    owner_grant = await slash(sim, world, world.members[-1], "permissions",
                              sub("role", [role_opt("role", world.member_role), *options(level="owner")]))
    assert "comes from the bot's configuration" in content_of(owner_grant)
    # a moderator may grant up to mod
    granted = await slash(sim, world, world.moderator, "permissions",
                          sub("role", [role_opt("role", world.member_role), *options(level="mod")]))
    assert content_of(granted) == "Members of Member now have the mod level."
    assert "commands in" in content_of(await slash(sim, world, holder, "metrics"))  # metrics needs mod
    assert "E5002" in content_of(await slash(sim, world, without, "metrics"))
    # the per-command override: mods may not lower an admin command (the command itself needs admin)
    lowered = await slash(sim, world, world.moderator, "permissions",
                          sub("command", options(command="settings set", setting="mod")))
    assert "E5002" in content_of(lowered)
    # the guild owner (admin) lowers /permissions command to mod; then a mod still cannot unlock admin commands
    assert "now needs the mod level" in content_of(await slash(
        sim, world, world.owner, "permissions", sub("command", options(command="permissions command", setting="mod"))))
    again = await slash(sim, world, world.moderator, "permissions",
                        sub("command", options(command="settings set", setting="everyone")))
    assert "requires admin, above your own level (mod)" in content_of(again)
    below_floor = await slash(sim, world, world.owner, "permissions",
                              sub("command", options(command="settings set", setting="everyone")))
    assert "needs at least the mod level" in content_of(below_floor)
    # an admin makes /metrics everyone's, then turns /status off
    await slash(sim, world, world.owner, "permissions", sub("command", options(command="metrics", setting="everyone")))
    assert "commands in" in content_of(await slash(sim, world, without, "metrics"))
    off = await slash(sim, world, world.owner, "permissions", sub("command", options(command="status", setting="off")))
    assert "off" in content_of(off)
    refused = await slash(sim, world, without, "status")
    assert "E5004" in content_of(refused) and is_ephemeral(refused)
    locked = await slash(sim, world, world.owner, "permissions", sub("command", options(command="help", setting="off")))
    assert "can't be turned off" in content_of(locked)
    listing = content_of(await slash(sim, world, world.moderator, "permissions", sub("list")))
    assert "Member: mod" in listing and "/metrics: needs everyone" in listing
    # prefix form and a bad level
    bad = await prefix(sim, world, world.owner, f"!permissions role <@&{world.member_role}> wizard")
    assert "unknown level" in bad["content"] and "E5001" in bad["content"]
