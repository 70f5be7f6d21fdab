"""Escalation through role grants, end to end: who may give which role a level.

The simulated server's roles, lowest first: @everyone (0), Member (1), Moderator (2, moderator
permissions with Manage Roles), Admin (3, Administrator), and the bot's managed role Innkeeper (4).
A moderator holds Moderator and Member. Every refusal must leave ``role_permissions`` untouched.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.e2e.commands import (
    CommandBotFactory,
    World,
    content_of,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.procs import SimulatorProc, bot_api

pytestmark = pytest.mark.e2e


def role_opt(role_id: str) -> dict[str, object]:
    return {"name": "role", "type": 8, "value": role_id}


async def grant(sim: SimulatorProc, world: World, user: str, role_id: str, level: str) -> str:
    report = await slash(sim, world, user, "permissions", sub("role", [role_opt(role_id), *options(level=level)]))
    return content_of(report)


async def stored_levels(dsn: str) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT role_id, level FROM role_permissions")
    finally:
        await conn.close()
    return {r["role_id"]: r["level"] for r in rows}


async def roles_by_name(sim: SimulatorProc, world: World) -> dict[str, dict[str, Any]]:
    status, roles = await asyncio.to_thread(bot_api, sim, "GET", f"/api/v10/guilds/{world.guild_id}/roles")
    assert status == 200, roles
    return {r["name"]: r for r in roles}


async def test_a_moderator_cannot_reach_everyone_a_managed_role_their_own_or_a_higher_one(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    await command_bot()
    roles = await roles_by_name(sim, world)
    managed = roles["Innkeeper"]
    assert managed["managed"] and roles["Moderator"]["position"] < roles["Admin"]["position"]
    mod = world.moderator
    everyone = await grant(sim, world, mod, world.guild_id, "mod")
    assert "@everyone can't have a level" in everyone and "E5002" in everyone
    bot_role = await grant(sim, world, mod, managed["id"], "mod")
    assert "managed by Discord or an integration" in bot_role and "E5002" in bot_role
    above = await grant(sim, world, mod, world.admin_role, "mod")
    assert "Admin is above your highest role (Moderator)" in above and "E5002" in above
    own = await grant(sim, world, mod, world.mod_role, "mod")
    assert "Moderator is your highest role" in own and "E5002" in own
    by_prefix = await prefix(sim, world, mod, "!permissions role @everyone mod")
    assert "@everyone can't have a level" in by_prefix["content"]
    assert await stored_levels(migrated_db) == {}
    # what the rules allow: a role below the moderator's, up to their own level
    below = await grant(sim, world, mod, world.member_role, "mod")
    assert below == "Members of Member now have the mod level."
    assert await stored_levels(migrated_db) == {int(world.member_role): 1}


async def test_the_owner_is_above_every_role_but_not_above_the_rules_and_levels_need_manage_roles(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    await command_bot()
    roles = await roles_by_name(sim, world)
    owner = world.owner
    # the server's owner may change their own top role (Admin) and anything below...
    assert await grant(sim, world, owner, world.admin_role, "mod") == "Members of Admin now have the mod level."
    assert await grant(sim, world, owner, world.admin_role, "everyone") == "Admin no longer grants a level."
    # ...but nobody gives @everyone or a managed role a level
    assert "@everyone can't have a level" in await grant(sim, world, owner, world.guild_id, "admin")
    assert "managed by Discord" in await grant(sim, world, owner, roles["Innkeeper"]["id"], "admin")
    # a member whose level comes from a role grant, without Manage Roles, can't hand out levels
    assert "now have the mod level" in await grant(sim, world, owner, world.member_role, "mod")
    holder = world.with_member_role[0]
    refused = await grant(sim, world, holder, world.member_role, "everyone")
    assert "needs Discord's Manage Roles permission" in refused and "E5002" in refused
    assert await stored_levels(migrated_db) == {int(world.member_role): 1}
