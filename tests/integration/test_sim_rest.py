"""The simulator's REST API over real HTTP: auth, exact JSON headers, messages, guilds, commands, limits, faults.

The app is assembled here with the real REST and control routes and a recording fake gateway hub,
so dispatches can be asserted one by one. ``SimApp`` and the ``sim`` fixture are shared with the
other ``test_sim_rest*`` / ``test_sim_control*`` modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from simulator import control, rest
from simulator.config import SimConfig
from simulator.state import STATE_KEY, SimState
from simulator.world import World
from tests.support import ManualClock, wait_for

TOKEN = "sim-token"
AUTH = {"Authorization": f"Bot {TOKEN}"}


class FakeHub:
    """A GatewayHub that records every dispatch (as the JSON a socket would carry)."""

    def __init__(self, shards: int = 1) -> None:
        self.shards = shards
        self.live = True
        self.events: list[tuple[str, str, Any, dict[str, Any]]] = []
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.faults: list[tuple[str, int | None, bool, int]] = []

    def _record(self, how: str, target: Any, event: str, data: dict[str, Any]) -> None:
        decoded = json.loads(json.dumps(data))  # what the wire carries, detached from the simulator's dicts
        self.events.append((how, event, target, decoded))
        self.queue.put_nowait((event, decoded))

    def dispatch_guild(self, guild_id: int, event: str, data: dict[str, Any]) -> bool:
        if not self.live:
            return False
        self._record("guild", guild_id, event, data)
        return True

    def dispatch_shard(self, shard_id: int, event: str, data: dict[str, Any]) -> int:
        if not self.live:
            return 0
        self._record("shard", shard_id, event, data)
        return 1

    def apply_fault(self, kind: str, shard_id: int | None, *, resumable: bool = True, code: int = 4000,
                    seconds: float = 0.0) -> int:
        if kind not in ("disconnect", "reconnect", "invalid_session"):
            raise ValueError(f"unknown gateway fault {kind!r}")
        self.faults.append((kind, shard_id, resumable, code))
        return 1 if self.live else 0

    def shard_count(self) -> int | None:
        return self.shards if self.live else None

    def live_shards(self) -> dict[int, int]:
        return {i: 1 for i in range(self.shards)} if self.live else {}

    async def close_all(self) -> None:
        return None

    def identify_remaining(self) -> int:
        return 997

    def identify_reset_after_ms(self) -> int:
        return 12_345

    def set_identify_remaining(self, remaining: int | None) -> None:
        return None

    def terminate_sessions(self, code: int, reason: str) -> int:
        return 0

    def close_disallowed_sessions(self) -> int:
        return 0

    def delivery_report(self) -> dict[str, Any]:
        return {"sessions": [], "pending": 0, "resume_window_s": 120.0}

    def of(self, event: str) -> list[dict[str, Any]]:
        return [d for _, e, _, d in self.events if e == event]

    async def next(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                name, data = await self.queue.get()
                if name == event:
                    return data
        return await asyncio.wait_for(wait(), timeout)


class SimApp:
    """A test client bound to an assembled simulator app."""

    def __init__(self, client: TestClient[web.Request, web.Application], hub: FakeHub, state: SimState) -> None:
        self.client = client
        self.hub = hub
        self.state = state
        self.world = state.world

    async def api(self, method: str, path: str, *, auth: bool = True, version: int = 10,
                  **kwargs: Any) -> aiohttp.ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            headers.update(AUTH)
        return await self.client.request(method, f"/api/v{version}{path}", headers=headers, **kwargs)

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, f"/_sim/{path}", json=body) if body is not None else \
            await self.client.request(method, f"/_sim/{path}")
        return resp.status, await resp.json()

    def guild(self, index: int = 0) -> Any:
        return self.world.guilds[index]

    def text_channel(self, index: int = 0) -> int:
        return int(self.guild(index).channels[0].id)


def build_app(config: SimConfig, hub: FakeHub) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[STATE_KEY] = SimState(config=config, world=World(config), gateway=hub)
    rest.setup(app)
    control.setup(app)
    return app


@contextlib.asynccontextmanager
async def running_sim(config: SimConfig | None = None, shards: int = 1) -> AsyncIterator[SimApp]:
    """An assembled simulator app (real REST and control routes, recording hub) on a test server."""
    hub = FakeHub(shards)
    app = build_app(config or default_config(), hub)
    async with TestClient(TestServer(app)) as client:
        yield SimApp(client, hub, app[STATE_KEY])


def default_config() -> SimConfig:
    return SimConfig(guilds=8, guild_sizes="fixed", members_per_guild=12, channels_per_guild=4, token=TOKEN,
                     global_rate=1000)


@pytest.fixture
async def sim() -> AsyncIterator[SimApp]:
    async with running_sim() as app:
        yield app


def assert_exact_json(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Content-Type"] == "application/json", resp.headers["Content-Type"]


# -- auth and headers ----------------------------------------------------------------------------

async def test_missing_or_bad_token_is_401_and_counted(sim: SimApp) -> None:
    resp = await sim.api("GET", "/users/@me", auth=False)
    assert resp.status == 401
    assert_exact_json(resp)
    assert await resp.json() == {"message": "401: Unauthorized", "code": 0}
    resp = await sim.api("GET", "/users/@me", auth=False, headers={"Authorization": "Bot wrong"})
    assert resp.status == 401
    resp = await sim.api("GET", "/users/@me", auth=False, headers={"Authorization": TOKEN})  # no "Bot " prefix
    assert resp.status == 401
    assert sim.state.stats.invalid_requests == 3
    assert sim.state.stats.requests == 3


async def test_users_me_is_the_bot_with_exact_json_and_bucket_headers(sim: SimApp) -> None:
    for version in (10, 9):
        resp = await sim.api("GET", "/users/@me", version=version)
        assert resp.status == 200
        assert_exact_json(resp)
        me = await resp.json()
        assert me["id"] == str(sim.world.application_id) and me["bot"] is True
        for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Reset-After",
                       "X-RateLimit-Bucket"):
            assert header in resp.headers
        assert float(resp.headers["X-RateLimit-Reset"]) == pytest.approx(time.time(), abs=5)
    assert sim.state.stats.invalid_requests == 0


async def test_application_info_parses_as_discord_py_appinfo(sim: SimApp) -> None:
    from discord.appinfo import AppInfo

    resp = await sim.api("GET", "/oauth2/applications/@me")
    data = await resp.json()
    assert data["id"] == str(sim.world.application_id)
    assert data["team"] is None and data["owner"]["id"] == str(sim.world.application_owner_id)

    class _State:  # the two things AppInfo touches on the connection state
        def create_user(self, payload: dict[str, Any]) -> Any:
            return payload

    info = AppInfo(_State(), data)  # type: ignore[arg-type]
    assert info.id == sim.world.application_id and info.bot_public and info.verify_key


async def test_gateway_bot_reports_shards_and_identify_budget(sim: SimApp) -> None:
    resp = await sim.api("GET", "/gateway/bot")
    data = await resp.json()
    host = f"{sim.client.server.host}:{sim.client.server.port}"
    assert data == {"url": f"ws://{host}/gateway", "shards": sim.state.config.shards,
                    "session_start_limit": {"total": 1000, "remaining": 997, "reset_after": 12_345,
                                            "max_concurrency": 1}}
    resp = await sim.api("GET", "/gateway")
    assert await resp.json() == {"url": f"ws://{host}/gateway"}


# -- messages ------------------------------------------------------------------------------------

async def test_message_create_stores_dispatches_and_lists_newest_first(sim: SimApp) -> None:
    channel = sim.text_channel()
    guild = sim.guild()
    mentioned = guild.member_ids[1]
    ids = []
    for i in range(3):
        resp = await sim.api("POST", f"/channels/{channel}/messages", json={"content": f"m{i} <@{mentioned}>"})
        assert resp.status == 200, await resp.text()
        assert_exact_json(resp)
        msg = await resp.json()
        ids.append(msg["id"])
    assert msg["author"]["id"] == str(sim.world.application_id)
    assert msg["guild_id"] == str(guild.id) and msg["channel_id"] == str(channel)
    assert msg["mentions"][0]["id"] == str(mentioned) and "member" in msg["mentions"][0]
    assert "member" not in msg  # REST answers carry no member; the gateway echo does
    for key in ("timestamp", "edited_timestamp", "tts", "mention_everyone", "mention_roles", "attachments", "embeds",
                "pinned", "type", "flags", "components"):
        assert key in msg
    echoed = sim.hub.of("MESSAGE_CREATE")
    assert [m["id"] for m in echoed] == ids
    assert echoed[0]["member"]["roles"] and "user" not in echoed[0]["member"]
    assert sim.hub.events[0][2] == guild.id  # routed by guild

    resp = await sim.api("GET", f"/channels/{channel}/messages?limit=2")
    listed = await resp.json()
    assert [m["id"] for m in listed] == [ids[2], ids[1]]
    resp = await sim.api("GET", f"/channels/{channel}/messages?before={ids[2]}")
    assert [m["id"] for m in await resp.json()] == [ids[1], ids[0]]
    resp = await sim.api("GET", f"/channels/{channel}/messages?after={ids[0]}")
    assert [m["id"] for m in await resp.json()] == [ids[2], ids[1]]
    resp = await sim.api("GET", f"/channels/{channel}/messages/{ids[1]}")
    assert (await resp.json())["content"].startswith("m1")
    assert sim.state.stats.messages_created == 3


async def test_message_created_parses_as_a_discord_py_message(sim: SimApp) -> None:
    from discord.message import Message

    channel = sim.text_channel()
    resp = await sim.api("POST", f"/channels/{channel}/messages", json={
        "content": "hello", "embeds": [{"title": "t", "description": "d"}], "nonce": "n1",
        "message_reference": {"message_id": "123456789012345678"}})
    data = await resp.json()
    assert data["type"] == 19 and data["embeds"][0]["type"] == "rich" and data["nonce"] == "n1"

    class _Chan:
        guild = None
        id = channel

    class _State:
        def store_user(self, payload: dict[str, Any], *, cache: bool = True) -> Any:
            return payload

        def create_user(self, payload: dict[str, Any]) -> Any:
            return payload

        def _get_guild(self, _id: int | None) -> None:
            return None

    msg = Message(state=_State(), channel=_Chan(), data=data)  # type: ignore[arg-type]
    assert msg.content == "hello" and msg.embeds[0].title == "t" and msg.reference is not None


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"content": ""}, 400, 50006),
    ({}, 400, 50006),
    ({"content": "x" * 2001}, 400, 50035),
    ({"content": 5}, 400, 50035),
    ({"content": "ok", "embeds": "nope"}, 400, 50035),
    ({"content": "ok", "embeds": [1]}, 400, 50035),
    ({"content": "ok", "tts": "yes"}, 400, 50035),
    ({"content": "ok", "flags": True}, 400, 50035),
    ([1, 2], 400, 50035),
])
async def test_message_body_validation(sim: SimApp, body: Any, status: int, code: int) -> None:
    resp = await sim.api("POST", f"/channels/{sim.text_channel()}/messages", json=body)
    assert resp.status == status
    assert_exact_json(resp)
    error = await resp.json()
    assert error["code"] == code
    if code == 50035:
        assert error["message"] == "Invalid Form Body" and error["errors"]
    assert not sim.hub.of("MESSAGE_CREATE")


async def test_content_at_the_limit_and_embed_only_messages_pass(sim: SimApp) -> None:
    channel = sim.text_channel()
    assert (await sim.api("POST", f"/channels/{channel}/messages", json={"content": "x" * 2000})).status == 200
    assert (await sim.api("POST", f"/channels/{channel}/messages", json={"embeds": [{"title": "e"}]})).status == 200


async def test_malformed_bodies_are_400_never_500(sim: SimApp) -> None:
    channel = sim.text_channel()
    resp = await sim.api("POST", f"/channels/{channel}/messages", data=b"{not json",
                         headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["code"] == 50109
    resp = await sim.api("POST", f"/channels/{channel}/messages", data=b"\xff\xfe",
                         headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await sim.api("GET", f"/channels/{channel}/messages?limit=abc")
    assert resp.status == 400 and (await resp.json())["code"] == 50035
    resp = await sim.api("GET", f"/channels/{channel}/messages?limit=101")
    assert resp.status == 400
    resp = await sim.api("GET", "/channels/not-a-number/messages")
    assert resp.status == 400
    resp = await sim.api("POST", f"/channels/{channel}/messages", data=b"--x\r\nbroken",
                         headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert resp.status == 400, await resp.text()


async def test_unknown_channel_message_and_non_text_channel(sim: SimApp) -> None:
    resp = await sim.api("POST", "/channels/123456789012345678/messages", json={"content": "x"})
    assert resp.status == 404
    assert await resp.json() == {"message": "Unknown Channel", "code": 10003}
    channel = sim.text_channel()
    resp = await sim.api("GET", f"/channels/{channel}/messages/123456789012345678")
    assert resp.status == 404 and (await resp.json())["code"] == 10008
    category = sim.guild().channels[-1]
    assert category.type == 4
    resp = await sim.api("POST", f"/channels/{category.id}/messages", json={"content": "x"})
    assert resp.status == 400 and (await resp.json())["code"] == 50008


async def test_edit_and_delete_dispatch_update_and_delete(sim: SimApp) -> None:
    channel = sim.text_channel()
    msg = await (await sim.api("POST", f"/channels/{channel}/messages", json={"content": "before"})).json()
    resp = await sim.api("PATCH", f"/channels/{channel}/messages/{msg['id']}", json={"content": "after"})
    edited = await resp.json()
    assert edited["content"] == "after" and edited["edited_timestamp"] is not None
    assert sim.hub.of("MESSAGE_UPDATE")[0]["content"] == "after"
    listed = await (await sim.api("GET", f"/channels/{channel}/messages")).json()
    assert listed[0]["content"] == "after"
    resp = await sim.api("DELETE", f"/channels/{channel}/messages/{msg['id']}")
    assert resp.status == 204
    assert sim.hub.of("MESSAGE_DELETE") == [{"id": msg["id"], "channel_id": str(channel),
                                             "guild_id": str(sim.guild().id)}]
    assert await (await sim.api("GET", f"/channels/{channel}/messages")).json() == []
    resp = await sim.api("DELETE", f"/channels/{channel}/messages/{msg['id']}")
    assert resp.status == 404


async def test_bot_cannot_edit_a_users_message(sim: SimApp) -> None:
    guild = sim.guild()
    channel = sim.text_channel()
    status, posted = await sim.control("POST", "messages", {"guild_id": str(guild.id), "channel_id": str(channel),
                                                            "author_id": str(guild.member_ids[0]), "content": "mine"})
    assert status == 200
    resp = await sim.api("PATCH", f"/channels/{channel}/messages/{posted['id']}", json={"content": "hijack"})
    assert resp.status == 403 and (await resp.json())["code"] == 50005


async def test_typing_and_get_channel(sim: SimApp) -> None:
    channel = sim.text_channel()
    resp = await sim.api("POST", f"/channels/{channel}/typing")
    assert resp.status == 204
    data = await (await sim.api("GET", f"/channels/{channel}")).json()
    assert data["id"] == str(channel) and data["guild_id"] == str(sim.guild().id) and data["type"] == 0


async def test_dm_channel_create_send_and_route_to_shard_zero(sim: SimApp) -> None:
    user_id = sim.guild().member_ids[2]
    resp = await sim.api("POST", "/users/@me/channels", json={"recipient_id": str(user_id)})
    assert resp.status == 200
    dm = await resp.json()
    assert dm["type"] == 1 and dm["recipients"][0]["id"] == str(user_id)
    again = await (await sim.api("POST", "/users/@me/channels", json={"recipient_id": user_id})).json()
    assert again["id"] == dm["id"]
    resp = await sim.api("POST", f"/channels/{dm['id']}/messages", json={"content": "psst"})
    msg = await resp.json()
    assert "guild_id" not in msg
    how, event, target, data = sim.hub.events[-1]
    assert (how, event, target) == ("shard", "MESSAGE_CREATE", 0) and data["content"] == "psst"
    status, view = await sim.control("GET", f"dms/{user_id}")
    assert status == 200 and view["messages"][0]["content"] == "psst"
    for bad in ({}, {"recipient_id": True}):  # (the dm-create bucket allows 5 per second)
        resp = await sim.api("POST", "/users/@me/channels", json=bad)
        assert resp.status == 400, bad
    resp = await sim.api("POST", "/users/@me/channels", json={"recipient_id": "123456789012345678"})
    assert resp.status == 400 and (await resp.json())["code"] == 50007


# -- guilds --------------------------------------------------------------------------------------

async def test_guild_routes(sim: SimApp) -> None:
    guild = sim.guild(1)
    data = await (await sim.api("GET", f"/guilds/{guild.id}?with_counts=true")).json()
    assert data["id"] == str(guild.id) and data["approximate_member_count"] == guild.member_count
    channels = await (await sim.api("GET", f"/guilds/{guild.id}/channels")).json()
    assert [c["id"] for c in channels] == [str(c.id) for c in guild.channels]
    roles = await (await sim.api("GET", f"/guilds/{guild.id}/roles")).json()
    assert roles[0]["id"] == str(guild.id)
    resp = await sim.api("GET", "/guilds/123456789012345678")
    assert resp.status == 404 and (await resp.json())["code"] == 10004


async def test_guild_members_paginate_by_user_id_with_the_bot(sim: SimApp) -> None:
    guild = sim.guild()
    expected = sorted([*guild.member_ids, sim.world.application_id])
    got: list[int] = []
    after = 0
    while True:
        page = await (await sim.api("GET", f"/guilds/{guild.id}/members?limit=5&after={after}")).json()
        if not page:
            break
        assert len(page) <= 5
        got += [int(m["user"]["id"]) for m in page]
        after = got[-1]
    assert got == expected
    one = await (await sim.api("GET", f"/guilds/{guild.id}/members")).json()
    assert len(one) == 1  # Discord's default limit is 1
    member = await (await sim.api("GET", f"/guilds/{guild.id}/members/{guild.member_ids[3]}")).json()
    assert member["user"]["id"] == str(guild.member_ids[3]) and "joined_at" in member
    resp = await sim.api("GET", f"/guilds/{guild.id}/members/123456789012345678")
    assert resp.status == 404 and (await resp.json())["code"] == 10007
    resp = await sim.api("GET", f"/guilds/{guild.id}/members?limit=1001")
    assert resp.status == 400


# -- application commands ------------------------------------------------------------------------

async def test_bulk_overwrite_commands_keeps_ids_and_validates(sim: SimApp) -> None:
    app_id = sim.world.application_id
    body = [{"name": "ping", "description": "Ping", "type": 1},
            {"name": "Report", "type": 3, "description": ""}]
    resp = await sim.api("PUT", f"/applications/{app_id}/commands", json=body)
    assert resp.status == 200, await resp.text()
    first = {c["name"]: c for c in await resp.json()}
    assert set(first) == {"ping", "Report"} and first["ping"]["application_id"] == str(app_id)
    again = {c["name"]: c for c in await (await sim.api("PUT", f"/applications/{app_id}/commands", json=body)).json()}
    assert again["ping"]["id"] == first["ping"]["id"]
    listed = await (await sim.api("GET", f"/applications/{app_id}/commands")).json()
    assert {c["name"] for c in listed} == {"ping", "Report"}

    guild = sim.guild()
    resp = await sim.api("PUT", f"/applications/{app_id}/guilds/{guild.id}/commands",
                         json=[{"name": "setup", "description": "Setup"}])
    created = await resp.json()
    assert created[0]["guild_id"] == str(guild.id)
    assert sim.state.commands.find("setup", guild.id) is not None

    for bad in ({"name": "x"}, [{"name": "has space", "description": "d"}], [{"name": "a", "description": ""}],
                [{"name": "a", "description": "d"}, {"name": "a", "description": "e"}],
                [{"name": "a", "description": "d", "options": [{"name": "o"}]}], ["x"]):
        resp = await sim.api("PUT", f"/applications/{app_id}/commands", json=bad)
        assert resp.status == 400, bad
        assert (await resp.json())["code"] == 50035
    resp = await sim.api("PUT", "/applications/42/commands", json=[])
    assert resp.status == 403


# -- rate limits ---------------------------------------------------------------------------------

async def test_message_bucket_429_has_discords_shape(sim: SimApp) -> None:
    channel = sim.text_channel()
    statuses = []
    for i in range(6):
        resp = await sim.api("POST", f"/channels/{channel}/messages", json={"content": f"b{i}"})
        statuses.append(resp.status)
    assert statuses == [200] * 5 + [429]
    assert_exact_json(resp)
    body = await resp.json()
    assert body["message"] == "You are being rate limited." and body["global"] is False and body["code"] == 0
    assert 0 < body["retry_after"] <= 5.0
    assert resp.headers["Via"]
    assert resp.headers["X-RateLimit-Scope"] == "user"
    assert resp.headers["Retry-After"] == str(math.ceil(body["retry_after"]))
    assert resp.headers["X-RateLimit-Remaining"] == "0" and resp.headers["X-RateLimit-Limit"] == "5"
    assert sim.state.stats.rate_limited["user"] == 1 and sim.state.stats.invalid_requests == 1
    # another channel is another bucket (major parameter)
    resp = await sim.api("POST", f"/channels/{sim.text_channel(1)}/messages", json={"content": "other"})
    assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "4"
    assert len(sim.hub.of("MESSAGE_CREATE")) == 6


async def test_global_limit_and_exempt_callbacks() -> None:
    async with running_sim(SimConfig(guilds=4, guild_sizes="fixed", token=TOKEN, global_rate=5)) as sim:
        statuses = [(await sim.api("GET", f"/guilds/{sim.guild(i % 4).id}")).status for i in range(8)]
        assert statuses.count(429) >= 1 and statuses[:5] == [200] * 5
        resp = await sim.api("GET", "/users/@me")
        if resp.status != 429:  # the window may have rolled over: fill it again
            for _ in range(6):
                resp = await sim.api("GET", "/users/@me")
        assert resp.status == 429
        body = await resp.json()
        assert body["global"] is True
        assert resp.headers["X-RateLimit-Global"] == "true" and resp.headers["X-RateLimit-Scope"] == "global"
        assert resp.headers["Via"]
        assert sim.state.stats.rate_limited["global"] >= 2
        # an interaction callback is exempt from the global limit (404 here: no such interaction, but not 429)
        resp = await sim.api("POST", "/interactions/1/abc/callback", auth=False, json={"type": 4})
        assert resp.status == 404 and (await resp.json())["code"] == 10062


# -- faults --------------------------------------------------------------------------------------

async def test_http_error_fault_hits_the_next_n_matching_requests(sim: SimApp) -> None:
    status, reply = await sim.control("POST", "faults", {"kind": "http_error", "status": 503, "route": "/messages",
                                                         "count": 2})
    assert status == 200 and reply["applied"] == 2
    channel = sim.text_channel()
    assert (await sim.api("GET", "/users/@me")).status == 200  # does not match the route
    for _ in range(2):
        resp = await sim.api("GET", f"/channels/{channel}/messages")
        assert resp.status == 503
        assert_exact_json(resp)
        assert (await resp.json())["code"] == 0
    assert (await sim.api("GET", f"/channels/{channel}/messages")).status == 200
    assert sim.state.rest_faults == []
    assert sim.state.stats.faults_applied == 2


async def test_injected_429_scopes_are_counted_apart(sim: SimApp) -> None:
    await sim.control("POST", "faults", {"kind": "http_error", "status": 429, "scope": "shared",
                                         "retry_after": 0.25})
    resp = await sim.api("GET", "/users/@me")
    assert resp.status == 429 and resp.headers["X-RateLimit-Scope"] == "shared" and resp.headers["Via"]
    body = await resp.json()
    assert body["retry_after"] == 0.25 and body["global"] is False
    assert sim.state.stats.rate_limited["shared"] == 1 and sim.state.stats.invalid_requests == 0
    await sim.control("POST", "faults", {"kind": "http_error", "status": 429, "route": "POST /channels"})
    assert (await sim.api("GET", f"/channels/{sim.text_channel()}/messages")).status == 200  # method differs
    resp = await sim.api("POST", f"/channels/{sim.text_channel()}/messages", json={"content": "x"})
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    assert sim.state.stats.rate_limited["user"] == 1 and sim.state.stats.invalid_requests == 1


async def test_latency_fault_delays_matching_requests(sim: SimApp) -> None:
    await sim.control("POST", "faults", {"kind": "latency", "ms": 300, "route": "/users/@me", "count": 1})
    applied = sim.state.stats.faults_applied
    start = time.monotonic()
    assert (await sim.api("GET", "/users/@me")).status == 200
    assert time.monotonic() - start >= 0.29  # delayed …
    assert sim.state.stats.faults_applied == applied + 1 and not sim.state.rest_faults  # … by the one fault
    assert (await sim.api("GET", "/users/@me")).status == 200
    assert sim.state.stats.faults_applied == applied + 1  # count 1: the next request is not delayed


async def test_a_held_request_is_listed_and_completes_after_its_client_hung_up(sim: SimApp) -> None:
    """``if_client_gone: complete`` (the default): the server got the request, it lands anyway."""
    channel = sim.text_channel()
    await sim.control("POST", "faults", {"kind": "latency", "ms": 400, "route": f"POST /channels/{channel}/messages"})
    send = asyncio.create_task(sim.api("POST", f"/channels/{channel}/messages", json={"content": "late"}))
    await wait_for(lambda: sim.state.held_requests, message="the send held")
    _, listed = await sim.control("GET", "faults")
    assert listed["held"] == [{"method": "POST", "path": f"/api/v10/channels/{channel}/messages", "ms": 400,
                               "if_client_gone": "complete"}] and listed["rest_faults"] == []
    send.cancel()  # the client hangs up while the request is held
    with contextlib.suppress(asyncio.CancelledError):
        await send
    await wait_for(lambda: sim.state.stats.messages_created == 1, timeout=5, message="the held send to land")
    assert not sim.state.held_requests and sim.state.stats.dropped_requests == 0


async def test_a_held_request_is_dropped_when_its_client_hangs_up_with_if_client_gone_drop(sim: SimApp) -> None:
    channel = sim.text_channel()
    route = f"POST /channels/{channel}/messages"
    await sim.control("POST", "faults", {"kind": "latency", "ms": 60_000, "route": route,
                                         "if_client_gone": "drop"})
    send = asyncio.create_task(sim.api("POST", f"/channels/{channel}/messages", json={"content": "lost"}))
    await wait_for(lambda: sim.state.held_requests, message="the send held")
    send.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await send
    await wait_for(lambda: sim.state.stats.dropped_requests == 1, timeout=5, message="the held send dropped")
    assert not sim.state.held_requests and sim.state.stats.messages_created == 0
    assert sim.hub.of("MESSAGE_CREATE") == []
    # a client that waits gets its answer after the delay, as with the default
    await sim.control("POST", "faults", {"kind": "latency", "ms": 200, "route": route, "if_client_gone": "drop"})
    start = time.monotonic()
    resp = await sim.api("POST", f"/channels/{channel}/messages", json={"content": "patient"})
    assert resp.status == 200 and time.monotonic() - start >= 0.19
    assert sim.state.stats.messages_created == 1


async def test_enforce_nonce_returns_the_message_the_nonce_created(sim: SimApp) -> None:
    """``message.mdx``, Create Message: with ``enforce_nonce`` a nonce used in the past few minutes by the
    same author returns "that message" and "no new message will be created"."""
    channel, other = sim.text_channel(), sim.text_channel(1)
    body = {"content": "once", "nonce": "ikr-7", "enforce_nonce": True}
    first = await (await sim.api("POST", f"/channels/{channel}/messages", json=body)).json()
    again = await sim.api("POST", f"/channels/{channel}/messages", json={**body, "content": "twice"})
    assert again.status == 200 and (await again.json()) == first
    elsewhere = await (await sim.api("POST", f"/channels/{other}/messages", json=body)).json()
    assert elsewhere == first  # per author, as documented: not per channel
    assert sim.state.stats.messages_created == 1 and sim.state.stats.nonce_duplicates == 2
    assert len(sim.hub.of("MESSAGE_CREATE")) == 1
    # without enforce_nonce the nonce is only echoed back, never checked
    plain = await (await sim.api("POST", f"/channels/{channel}/messages",
                                 json={"content": "plain", "nonce": "ikr-7"})).json()
    assert plain["id"] != first["id"] and plain["nonce"] == "ikr-7"
    # a nonce is remembered for --nonce-window seconds only
    clock = ManualClock()
    third = sim.text_channel(2)  # a channel of its own: 5 sends per 5 s per channel
    sim.state.clock = clock
    fresh = await (await sim.api("POST", f"/channels/{third}/messages",
                                 json={**body, "nonce": "ikr-8"})).json()
    clock.advance(sim.state.config.nonce_window - 1)
    assert (await (await sim.api("POST", f"/channels/{third}/messages",
                                 json={**body, "nonce": "ikr-8"})).json())["id"] == fresh["id"]
    clock.advance(2)
    later = await (await sim.api("POST", f"/channels/{third}/messages", json={**body, "nonce": "ikr-8"})).json()
    assert later["id"] != fresh["id"] and sim.state.stats.messages_created == 4
    # "up to 25 characters"
    long = await sim.api("POST", f"/channels/{other}/messages", json={**body, "nonce": "x" * 26})
    assert long.status == 400 and (await long.json())["code"] == 50035


async def test_unknown_routes_are_discord_json_404s(sim: SimApp) -> None:
    resp = await sim.api("GET", "/nothing/here")
    assert resp.status == 404
    assert_exact_json(resp)
    assert await resp.json() == {"message": "404: Not Found", "code": 0}
    resp = await sim.api("PUT", "/users/@me")  # a known path with another method
    assert resp.status == 404
    assert (await sim.api("GET", "/users/@me")).status == 200  # the catch-all shadows nothing
