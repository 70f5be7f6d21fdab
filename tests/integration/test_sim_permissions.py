"""The simulator's permission model: channel overwrites that deny the bot, closed DMs, and their 403s counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulator.world_model import Perm
from tests.integration.test_sim_rest import SimApp, running_sim

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[SimApp]:
    async with running_sim() as app:
        yield app


async def invalid(sim: SimApp) -> int:
    return int((await sim.control("GET", "stats"))[1]["invalid_requests"])


async def send(sim: SimApp, channel: int | str, content: str = "hi") -> tuple[int, dict[str, object]]:
    resp = await sim.api("POST", f"/channels/{channel}/messages", json={"content": content})
    return resp.status, await resp.json()


async def test_an_overwrite_denying_the_bot_send_is_403_50013_and_counted(sim: SimApp) -> None:
    guild, channel = sim.guild(), sim.text_channel()
    bot = str(sim.world.application_id)
    assert (await send(sim, channel))[0] == 200
    status, answer = await sim.control("POST", f"channels/{channel}/overwrites",
                                       {"id": bot, "type": "member", "deny": str(Perm.SEND_MESSAGES)})
    assert status == 200 and answer["delivered"] is True
    overwrite = {"id": bot, "type": 1, "allow": "0", "deny": str(Perm.SEND_MESSAGES)}
    assert answer["channel"]["permission_overwrites"] == [overwrite]
    # the guild's shard learns it, as on Discord (discord.py's cache reads CHANNEL_UPDATE)
    (update,) = sim.hub.of("CHANNEL_UPDATE")
    assert update["id"] == str(channel) and update["guild_id"] == str(guild.id)
    assert update["permission_overwrites"] == [overwrite]
    before = await invalid(sim)
    assert await send(sim, channel) == (403, {"message": "Missing Permissions", "code": 50013})
    assert await invalid(sim) == before + 1  # every 403 counts toward Discord's ban
    # the bot can still read the channel; other channels are untouched
    assert (await sim.api("GET", f"/channels/{channel}/messages")).status == 200
    assert (await send(sim, sim.guild().channels[1].id))[0] == 200
    # allow 0 and deny 0 remove the overwrite
    await sim.control("POST", f"channels/{channel}/overwrites", {"id": bot, "type": "member"})
    assert (await send(sim, channel))[0] == 200


async def test_a_hidden_channel_is_403_50001_unless_the_bot_is_let_in(sim: SimApp) -> None:
    guild, channel = sim.guild(), sim.text_channel()
    await sim.control("POST", f"channels/{channel}/overwrites",
                      {"id": str(guild.id), "type": "role", "deny": Perm.VIEW_CHANNEL})
    assert await send(sim, channel) == (403, {"message": "Missing Access", "code": 50001})
    for path in (f"/channels/{channel}/messages", f"/channels/{channel}"):
        assert (await sim.api("GET", path)).status == 403
    bot_role = next(r for r in guild.roles if r.managed)
    await sim.control("POST", f"channels/{channel}/overwrites",
                      {"id": str(bot_role.id), "type": "role", "allow": Perm.VIEW_CHANNEL})
    assert (await send(sim, channel))[0] == 200  # a role allow beats the @everyone deny
    status, answer = await sim.control("DELETE", f"channels/{channel}/overwrites/{bot_role.id}")
    assert status == 200 and len(answer["channel"]["permission_overwrites"]) == 1
    assert (await send(sim, channel))[0] == 403
    await sim.control("POST", f"channels/{channel}/overwrites",
                      {"id": str(guild.id), "type": "role", "deny": Perm.READ_MESSAGE_HISTORY})
    resp = await sim.api("GET", f"/channels/{channel}/messages")
    assert resp.status == 200 and await resp.json() == []  # no history without the permission, as on Discord


async def test_interactions_carry_the_bots_channel_permissions(sim: SimApp) -> None:
    import asyncio

    guild, channel = sim.guild(), sim.text_channel()
    bot = str(sim.world.application_id)
    await sim.control("POST", f"channels/{channel}/overwrites",
                      {"id": bot, "type": "member", "deny": Perm.SEND_MESSAGES})
    user = str(guild.member_ids[1])
    task = asyncio.create_task(sim.control("POST", "interactions", {
        "guild_id": str(guild.id), "channel_id": str(channel), "user_id": user, "name": "ping", "timeout": 0.2}))
    interaction = await sim.hub.next("INTERACTION_CREATE")
    await task
    assert not int(interaction["app_permissions"]) & Perm.SEND_MESSAGES
    assert int(interaction["app_permissions"]) & Perm.VIEW_CHANNEL
    assert int(interaction["member"]["permissions"]) & Perm.SEND_MESSAGES  # only the bot was denied


async def test_closed_dms_refuse_the_bots_messages_with_403_50007(sim: SimApp) -> None:
    user = str(sim.guild().member_ids[2])
    status, answer = await sim.control("POST", f"users/{user}/dms", {"open": False})
    assert (status, answer) == (200, {"user_id": user, "open": False})
    resp = await sim.api("POST", "/users/@me/channels", json={"recipient_id": user})
    assert resp.status == 200  # opening the DM channel still works, as on Discord
    dm = (await resp.json())["id"]
    before = await invalid(sim)
    assert await send(sim, dm) == (403, {"message": "Cannot send messages to this user", "code": 50007})
    assert await invalid(sim) == before + 1
    await sim.control("POST", f"users/{user}/dms", {"open": True})
    assert (await send(sim, dm))[0] == 200


async def test_bad_permission_requests_are_400s_or_404s(sim: SimApp) -> None:
    guild, channel = sim.guild(), sim.text_channel()
    other = sim.guild(1)
    cases = [
        ("POST", "channels/123/overwrites", {"id": str(guild.id), "type": "role"}, 404),
        ("POST", f"channels/{channel}/overwrites", {"id": str(other.id), "type": "role"}, 400),  # another guild's
        ("POST", f"channels/{channel}/overwrites", {"id": "5", "type": "member"}, 400),
        ("POST", f"channels/{channel}/overwrites", {"id": str(guild.id), "type": "user"}, 400),
        ("POST", f"channels/{channel}/overwrites", {"id": str(guild.id), "type": "role", "deny": -1}, 400),
        ("POST", f"channels/{channel}/overwrites", {"id": str(guild.id), "type": "role", "allow": "x"}, 400),
        ("DELETE", f"channels/{channel}/overwrites/{guild.id}", None, 404),
        ("POST", "users/5/dms", {"open": False}, 404),
        ("POST", f"users/{sim.world.application_id}/dms", {"open": False}, 404),
        ("POST", f"users/{guild.member_ids[0]}/dms", {}, 400),
    ]
    for method, path, body, expected in cases:
        status, answer = await sim.control(method, path, body)
        assert status == expected and "error" in answer, (path, body, status, answer)


async def test_another_users_message_needs_manage_messages_to_delete_or_reflag(sim: SimApp) -> None:
    """``message.mdx``: "Delete Message" and "Edit Message" need MANAGE_MESSAGES for others' messages."""
    guild, channel = sim.guild(), sim.text_channel()
    posted = []
    for i in range(2):
        status, reply = await sim.control("POST", "messages", {"guild_id": str(guild.id), "channel_id": str(channel),
                                                               "author_id": str(guild.member_ids[0]),
                                                               "content": f"user {i}"})
        assert status == 200
        posted.append(reply["id"])
    status, own = await send(sim, channel, "the bot's")
    bot = str(sim.world.application_id)
    await sim.control("POST", f"channels/{channel}/overwrites",
                      {"id": bot, "type": "member", "deny": str(Perm.MANAGE_MESSAGES)})
    missing = {"message": "Missing Permissions", "code": 50013}
    resp = await sim.api("DELETE", f"/channels/{channel}/messages/{posted[0]}")
    assert resp.status == 403 and await resp.json() == missing
    resp = await sim.api("PATCH", f"/channels/{channel}/messages/{posted[0]}", json={"flags": 4})
    assert resp.status == 403 and await resp.json() == missing
    assert (await sim.api("DELETE", f"/channels/{channel}/messages/{own['id']}")).status == 204  # its own: fine
    await sim.control("POST", f"channels/{channel}/overwrites", {"id": bot, "type": "member"})
    assert (await sim.api("PATCH", f"/channels/{channel}/messages/{posted[0]}", json={"flags": 4})).status == 200
    assert (await sim.api("DELETE", f"/channels/{channel}/messages/{posted[1]}")).status == 204


async def test_a_users_dm_message_cannot_be_deleted(sim: SimApp) -> None:
    user = sim.guild().member_ids[0]
    status, reply = await sim.control("POST", "messages", {"author_id": str(user), "content": "hello bot"})
    assert status == 200
    resp = await sim.api("DELETE", f"/channels/{reply['channel_id']}/messages/{reply['id']}")
    assert resp.status == 403 and await resp.json() == {"message": "Cannot execute action on a DM channel",
                                                         "code": 50003}
