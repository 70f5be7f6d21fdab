"""Shared harness for the command e2e tests (no tests here): a bot with the pipeline against a real
simulator and the test's migrated database (``migrated_db`` in ``conftest.py``), and helpers to run
slash and prefix commands and read replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shard.bot import ClusterBot
from tests.procs import SimulatorProc, bot_api, http_json
from tests.support import wait_for

OWNER_ID_ENV = "INNKEEPER_OWNER_IDS"

#: Starts an in-process bot against a simulator and returns it once every shard is READY (``start_bot``).
BotFactory = Callable[..., Awaitable[ClusterBot]]
#: ``command_bot(owners=..., extra=..., cluster_id=...)``: a command-ready bot on the test's simulator and database.
CommandBotFactory = Callable[..., Awaitable[ClusterBot]]


@dataclass
class World:
    """One guild of the simulated world, with members of each kind."""

    guild_id: str
    channel_id: str
    owner: str  # the guild's owner: Admin role, level admin
    moderator: str | None  # a member with the Moderator role (moderator permissions)
    members: list[str]  # plain members without moderator permissions
    with_member_role: list[str]  # plain members that have the "Member" role
    mod_role: str
    admin_role: str
    member_role: str
    shard_id: int


async def _get(sim: SimulatorProc, path: str) -> Any:
    status, body = await asyncio.to_thread(bot_api, sim, "GET", path)
    assert status == 200, (path, body)
    return body


async def load_world(sim: SimulatorProc, index: int = 0) -> World:
    guild = sim.world(limit=index + 1)["guilds"][index]
    gid = guild["id"]
    roles = {r["name"]: r["id"] for r in await _get(sim, f"/api/v10/guilds/{gid}/roles")}
    mods, plain, with_role = [], [], []
    for uid in guild["members"][1:]:
        member = await _get(sim, f"/api/v10/guilds/{gid}/members/{uid}")
        if roles["Moderator"] in member["roles"]:
            mods.append(uid)
            continue
        plain.append(uid)
        if roles["Member"] in member["roles"]:
            with_role.append(uid)
    return World(gid, guild["channels"][0], guild["members"][0], mods[0] if mods else None, plain, with_role,
                 roles["Moderator"], roles["Admin"], roles["Member"], guild["shard_id"])


def options(**values: Any) -> list[dict[str, Any]]:
    """Slash options from keyword arguments (strings, ints, bools)."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
        out.append({"name": name, "type": kind, "value": value})
    return out


def sub(name: str, opts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A subcommand option wrapping ``opts``."""
    return [{"name": name, "type": 1, "options": opts or []}]


async def slash(sim: SimulatorProc, world: World, user: str, name: str, opts: list[dict[str, Any]] | None = None,
                *, timeout: float = 15.0, guild: bool = True) -> dict[str, Any]:
    """Run a slash command; return the whole simulator report (``callback`` is the bot's answer)."""
    body: dict[str, Any] = {"user_id": user, "name": name, "options": opts or [], "timeout": timeout}
    if guild:
        body.update(guild_id=world.guild_id, channel_id=world.channel_id)
    status, reply = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/interactions", body)
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


def content_of(report: dict[str, Any]) -> str:
    """The text of a slash answer: the immediate message, or the first follow-up after a defer."""
    callback = report["callback"]
    if callback["type"] == 4:
        return str(callback["data"].get("content") or "")
    return ""


async def followups(sim: SimulatorProc, report: dict[str, Any], count: int = 1, timeout: float = 15.0
                    ) -> list[dict[str, Any]]:
    """Wait for ``count`` follow-up messages of a (deferred) interaction."""
    iid = report["interaction_id"]

    async def got() -> list[dict[str, Any]] | None:
        data = await _get(sim, f"/_sim/interactions/{iid}")
        msgs = list(data.get("followups") or [])
        if data.get("original_edits"):
            msgs = [*data["original_edits"], *msgs]
        return msgs if len(msgs) >= count else None

    return await wait_for(got, timeout=timeout, message=f"{count} follow-up(s) of interaction {iid}")


async def answer_text(sim: SimulatorProc, report: dict[str, Any]) -> str:
    """What the user reads of a slash answer: the message, the first follow-up after a defer, or a modal."""
    callback = report["callback"]
    if callback["type"] == 5:
        return str((await followups(sim, report))[0].get("content") or "")
    if callback["type"] == 9:
        return "(a modal)"
    return content_of(report)


def is_ephemeral(report: dict[str, Any]) -> bool:
    return bool(int(report["callback"]["data"].get("flags") or 0) & 64)


async def channel_messages(sim: SimulatorProc, channel_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return await _get(sim, f"/api/v10/channels/{channel_id}/messages?limit={limit}")  # type: ignore[no-any-return]


async def reply_to(sim: SimulatorProc, channel: str, message_id: str) -> dict[str, Any] | None:
    """The bot's first message after ``message_id`` that replies to it or to nothing."""
    later = [m for m in await channel_messages(sim, channel) if int(m["id"]) > int(message_id)
             and m["author"].get("bot") and (m.get("message_reference") or {}).get("message_id", message_id)
             == message_id]
    return min(later, key=lambda m: int(m["id"])) if later else None


async def dm_channel(sim: SimulatorProc, user: str) -> str:
    """The id of the bot's DM channel with ``user`` (opened if needed)."""
    status, channel = await asyncio.to_thread(bot_api, sim, "POST", "/api/v10/users/@me/channels",
                                              {"recipient_id": user})
    assert status == 200, channel
    return str(channel["id"])


async def dm_with(sim: SimulatorProc, user: str, text: str, *, timeout: float = 15.0) -> dict[str, Any]:
    """Wait for the bot's DM to ``user`` that contains ``text``; return it."""
    channel = await dm_channel(sim, user)

    async def found() -> dict[str, Any] | None:
        return next((m for m in await channel_messages(sim, channel) if text in m["content"]), None)

    return await wait_for(found, timeout=timeout, message=f"a DM to {user} with {text!r}")


async def prefix(sim: SimulatorProc, world: World, user: str, content: str, *, timeout: float = 15.0,
                 channel_id: str | None = None) -> dict[str, Any]:
    """Send a message; wait for the bot's reply to it (a message referencing it) and return it."""
    channel = channel_id or world.channel_id
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": world.guild_id, "channel_id": channel, "author_id": user, "content": content})
    assert status == 200, posted

    async def reply() -> dict[str, Any] | None:
        return await reply_to(sim, channel, posted["id"])

    return await wait_for(reply, timeout=timeout, message=f"the bot's reply to {content!r}")


async def start_command_bot(start_bot: BotFactory, sim: SimulatorProc, database_url: str, *,
                            owners: tuple[str, ...] = (), extra: dict[str, str] | None = None,
                            cluster_id: int = 0) -> ClusterBot:
    env = {"DATABASE_URL": database_url, "INNKEEPER_ENCRYPTION_KEYS": "dev", OWNER_ID_ENV: ",".join(owners),
           "INNKEEPER_SYNC_COMMANDS": "true", **(extra or {})}
    bot = await start_bot(sim, shard_ids=[0, 1], shard_count=2, env=env, cluster_id=cluster_id)
    await wait_for(lambda: bot.deps.database.schema_version is not None, timeout=30,
                   message="the bot's database connection")
    return bot
