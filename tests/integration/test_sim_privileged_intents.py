"""Privileged intents are granted by the application's flags (``GET``/``PATCH /applications/@me``); others close 4014.

Raw HTTP and websocket clients against a real :class:`SimulatorServer`, and discord.py itself for
``PrivilegedIntentsRequired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl

from simulator.server import SimulatorServer
from tests.integration.test_sim_gateway import TOKEN, Connect, _config, connector

AUTH = {"Authorization": f"Bot {TOKEN}"}
GUILDS, GUILD_MEMBERS, GUILD_PRESENCES, GUILD_MESSAGES, MESSAGE_CONTENT = 1, 1 << 1, 1 << 8, 1 << 9, 1 << 15
PRESENCE_LIMITED, MEMBERS_LIMITED, CONTENT_LIMITED = 1 << 13, 1 << 15, 1 << 19


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(_config(identify_window=0.0)) as server:
        yield server


@pytest.fixture
def connect(http: aiohttp.ClientSession, sim: SimulatorServer) -> Connect:
    return connector(http, sim)


async def api(http: aiohttp.ClientSession, sim: SimulatorServer, method: str, path: str, *,
              auth: bool = True, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, f"{sim.url}/api/v10{path}", headers=AUTH if auth else {}, **kwargs) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return resp.status, await resp.json()


async def test_the_application_reports_its_flags_and_ready_carries_them(
        http: aiohttp.ClientSession, sim: SimulatorServer, connect: Connect) -> None:
    granted = PRESENCE_LIMITED | MEMBERS_LIMITED | CONTENT_LIMITED  # --privileged-intents' default: all three
    for path in ("/applications/@me", "/oauth2/applications/@me"):
        status, app = await api(http, sim, "GET", path)
        assert status == 200 and app["flags"] == granted and app["flags_new"] == str(granted)
        assert app["id"] == str(sim.state.world.application_id) and app["owner"]["id"]
    client = await connect()
    ready, _ = await client.ready((0, 2))
    assert ready["d"]["application"] == {"id": str(sim.state.world.application_id), "flags": granted}


async def test_patch_takes_the_members_intent_away_and_identify_with_it_closes_4014(
        http: aiohttp.ClientSession, sim: SimulatorServer, connect: Connect) -> None:
    stats = sim.state.stats
    with_members = await connect()
    await with_members.identify((0, 2), intents=GUILDS | GUILD_MEMBERS)
    without = await connect()
    await without.identify((1, 2), intents=GUILDS | GUILD_MESSAGES)
    for client in (with_members, without):
        ready = await client.recv()
        assert ready["t"] == "READY"
        client.session_id = ready["d"]["session_id"]

    status, app = await api(http, sim, "PATCH", "/applications/@me",
                            json={"flags": PRESENCE_LIMITED | CONTENT_LIMITED, "description": "no members"})
    assert status == 200 and app["flags"] == PRESENCE_LIMITED | CONTENT_LIMITED
    assert app["description"] == "no members"
    assert (await api(http, sim, "GET", "/applications/@me"))[1]["flags"] == PRESENCE_LIMITED | CONTENT_LIMITED
    # The live session that used the intent is terminated, and cannot be resumed; the other one is left alone.
    assert await with_members.close_code() == 4014
    assert sim.state.gateway.live_shards() == {1: 1}
    again = await connect()
    await again.send(6, {"token": TOKEN, "session_id": with_members.session_id, "seq": 1})
    assert (await again.recv())["d"] is False

    refused = await connect()
    await refused.identify((0, 2), intents=GUILDS | GUILD_MEMBERS)
    assert await refused.close_code() == 4014
    assert stats.privileged_intent_closes == 2 and stats.identifies == 2
    fine = await connect()
    ready, _ = await fine.ready((0, 2))  # message content is still granted (INTENTS asks for it)
    assert ready["d"]["application"]["flags"] == PRESENCE_LIMITED | CONTENT_LIMITED
    # And the HTTP restriction: listing members needs the intent too (guild.mdx, "List Guild Members").
    guild_id = sim.state.world.guilds[0].id
    assert await api(http, sim, "GET", f"/guilds/{guild_id}/members") == (
        403, {"message": "Missing Access", "code": 50001})
    status, app = await api(http, sim, "PATCH", "/applications/@me", json={"flags": app["flags"] | MEMBERS_LIMITED})
    assert status == 200 and (await api(http, sim, "GET", f"/guilds/{guild_id}/members"))[0] == 200


@pytest.mark.parametrize("intents", [GUILD_PRESENCES, GUILD_MEMBERS, MESSAGE_CONTENT])
async def test_every_privileged_intent_closes_4014_without_its_flag(http: aiohttp.ClientSession,
                                                                    intents: int) -> None:
    async with SimulatorServer(_config(privileged_intents="none")) as server:
        client = await connector(http, server)()
        await client.identify((0, 2), intents=GUILDS | intents)
        assert await client.close_code() == 4014
        assert server.state.stats.privileged_intent_closes == 1
        assert server.state.gateway.identify_remaining() == server.config.session_start_total  # none used
        ok = await connector(http, server)()
        await ok.identify((0, 2), intents=GUILDS | GUILD_MESSAGES)
        ready = await ok.recv()
        assert ready["t"] == "READY" and ready["d"]["application"]["flags"] == 0


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"flags": (1 << 13) | (1 << 15) | (1 << 19) | (1 << 12)}, "flags", "APPLICATION_FLAGS_NOT_EDITABLE"),
    ({"flags": 1 << 23}, "flags", "APPLICATION_FLAGS_NOT_EDITABLE"),
    ({"flags": "8192"}, "flags", "NUMBER_TYPE_COERCE"),
    ({"description": 5}, "description", "BASE_TYPE_BAD_TYPE"),
    ({"description": "x" * 401}, "description", "BASE_TYPE_MAX_LENGTH"),
    ({"tags": ["a", "b", "c", "d", "e", "f"]}, "tags", "BASE_TYPE_MAX_LENGTH"),
    ({"tags": ["x" * 21]}, "tags", None),
    ({"interactions_endpoint_url": "not a url"}, "interactions_endpoint_url", "URL_TYPE_INVALID_URL"),
    ({"icon": "not image data"}, "icon", "IMAGE_INVALID"),
    ({"event_webhooks_status": 3}, "event_webhooks_status", "BASE_TYPE_CHOICES"),
    ({"install_params": {"scopes": ["bot"], "permissions": "lots"}}, "install_params", None),
    ([{"flags": 0}], "_body", "DICT_TYPE_CONVERT"),
])
async def test_bad_patch_bodies_are_discord_shaped_400s(http: aiohttp.ClientSession, sim: SimulatorServer,
                                                        body: Any, field: str, code: str | None) -> None:
    status, error = await api(http, sim, "PATCH", "/applications/@me", json=body)
    assert status == 400 and error["code"] == 50035 and error["message"] == "Invalid Form Body", error
    assert field in error["errors"], error
    if code is not None:
        assert error["errors"][field]["_errors"][0]["code"] == code
    assert sim.state.application.flags == PRESENCE_LIMITED | MEMBERS_LIMITED | CONTENT_LIMITED  # nothing changed
    assert not sim.state.application.fields


async def test_patch_edge_cases(http: aiohttp.ClientSession, sim: SimulatorServer) -> None:
    async with http.patch(f"{sim.url}/api/v10/applications/@me", data=b"{nope", headers=AUTH) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 50109
    assert (await api(http, sim, "PATCH", "/applications/@me", auth=False, json={}))[0] == 401
    status, app = await api(http, sim, "PATCH", "/applications/@me", json={"flags": None, "unknown": 1})
    assert status == 200 and app["flags"] == 0 and "unknown" not in app  # null clears the editable flags
    status, app = await api(http, sim, "PATCH", "/applications/@me", json={
        "tags": ["inn", "rpg"], "icon": "data:image/png;base64,iVBORw0KGgo=", "interactions_endpoint_url": None,
        "install_params": {"scopes": ["bot", "applications.commands"], "permissions": 2048}})
    assert status == 200 and app["tags"] == ["inn", "rpg"] and len(app["icon"]) == 32
    assert app["install_params"] == {"scopes": ["bot", "applications.commands"], "permissions": "2048"}


async def test_rest_reads_follow_the_message_content_flag(http: aiohttp.ClientSession) -> None:
    async with SimulatorServer(_config(privileged_intents="presences,members")) as server:
        world = server.state.world
        guild = world.guilds[0]
        body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
                "author_id": str(guild.member_ids[0]), "content": "a secret"}
        async with http.post(f"{server.url}/_sim/messages", json=body) as resp:
            message_id = (await resp.json())["id"]
        base = f"/channels/{guild.channels[0].id}/messages"
        status, listed = await api(http, server, "GET", base)
        assert status == 200 and listed[0]["id"] == message_id and listed[0]["content"] == ""
        assert (await api(http, server, "GET", f"{base}/{message_id}"))[1]["content"] == ""
        status, own = await api(http, server, "POST", base, json={"content": "the bot's own words"})
        assert (await api(http, server, "GET", f"{base}/{own['id']}"))[1]["content"] == "the bot's own words"
        flags = server.state.application.flags | CONTENT_LIMITED
        assert (await api(http, server, "PATCH", "/applications/@me", json={"flags": flags}))[0] == 200
        assert (await api(http, server, "GET", f"{base}/{message_id}"))[1]["content"] == "a secret"


async def test_the_bots_own_member_update_needs_no_members_intent(sim: SimulatorServer, connect: Connect) -> None:
    gateway, world, stats = sim.state.gateway, sim.state.world, sim.state.stats
    client = await connect()
    await client.identify((0, 2), intents=GUILDS | GUILD_MESSAGES)  # no GUILD_MEMBERS
    ready = await client.recv()
    creates = [await client.recv() for _ in ready["d"]["guilds"]]
    guild_id = int(creates[0]["d"]["id"])
    other = world.member(guild_id, world.guild(guild_id).member_ids[0])  # type: ignore[union-attr]
    assert not gateway.dispatch_guild(guild_id, "GUILD_MEMBER_UPDATE", {"guild_id": str(guild_id), **other})
    assert stats.intent_filtered == 1
    bot = world.member(guild_id, world.application_id)
    assert bot is not None
    assert gateway.dispatch_guild(guild_id, "GUILD_MEMBER_UPDATE", {"guild_id": str(guild_id), **bot})
    got = await client.recv()
    assert got["t"] == "GUILD_MEMBER_UPDATE" and got["d"]["user"]["id"] == str(world.application_id)
    assert gateway.dispatch_guild_json(guild_id, "GUILD_MEMBER_UPDATE", json.dumps({"guild_id": str(guild_id), **bot}))
    assert (await client.recv())["t"] == "GUILD_MEMBER_UPDATE"
    assert not gateway.dispatch_guild(guild_id, "GUILD_MEMBER_ADD", {"guild_id": str(guild_id), **bot})
    assert stats.intent_filtered == 2


async def test_discord_py_raises_privileged_intents_required(http: aiohttp.ClientSession,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    async with SimulatorServer(_config(shards=1, max_concurrency=1)) as sim:
        status, _ = await api(http, sim, "PATCH", "/applications/@me", json={"flags": CONTENT_LIMITED})
        assert status == 200
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        intents = discord.Intents.default()
        intents.members = True
        client = discord.Client(intents=intents)
        try:
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(client.start(TOKEN), timeout=60)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        assert sim.state.stats.privileged_intent_closes == 1 and sim.state.stats.identifies == 0
