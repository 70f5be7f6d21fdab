"""The control API (``/_sim/…``): world view, injected messages, faults, stats, load streams, bad input."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulator.config import SimConfig
from tests.integration.test_sim_rest import SimApp, running_sim
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[SimApp]:
    async with running_sim() as app:
        yield app


@pytest.fixture
async def sharded() -> AsyncIterator[SimApp]:
    async with running_sim(SimConfig(guilds=40, guild_sizes="fixed", members_per_guild=6, shards=3,
                                     token="sim-token"), shards=4) as app:
        yield app


def message_body(sim: SimApp, **extra: Any) -> dict[str, Any]:
    guild = sim.guild()
    body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id), "author_id": str(guild.member_ids[0]),
            "content": "hello"}
    body.update(extra)
    return body


async def test_world_lists_guilds_with_shards_channels_and_human_members(sharded: SimApp) -> None:
    status, world = await sharded.control("GET", "world?limit=25")
    assert status == 200
    guilds = world["guilds"]
    assert len(guilds) == 25 and world["total"] == 40
    # the live sessions' shard count (4) wins over the configured recommendation (3)
    assert world["shard_count"] == 4
    bot = str(sharded.world.application_id)
    for g in guilds:
        assert isinstance(g["id"], str) and g["shard_id"] == (int(g["id"]) >> 22) % 4
        assert bot not in g["members"] and len(g["members"]) == 6
        first = sharded.world.channel(int(g["channels"][0]))
        assert first is not None and first[1].type == 0
    assert [g["id"] for g in guilds] == sorted((g["id"] for g in guilds), key=int)
    status, rest = await sharded.control("GET", "world?limit=100&offset=25")
    assert [g["id"] for g in rest["guilds"]] == [str(g.id) for g in sharded.world.guilds[25:]]
    sharded.hub.live = False
    _, offline = await sharded.control("GET", "world?limit=1")
    first = offline["guilds"][0]
    assert offline["shard_count"] == 3 and first["shard_id"] == (int(first["id"]) >> 22) % 3
    default = (await sharded.control("GET", "world"))[1]
    assert len(default["guilds"]) == 40
    for bad in ("world?limit=0", "world?limit=x", "world?offset=-1"):
        status, reply = await sharded.control("GET", bad)
        assert status == 400 and reply["error"]


async def test_injected_message_is_stored_and_dispatched_with_member_and_mentions(sim: SimApp) -> None:
    guild = sim.guild()
    other = guild.member_ids[3]
    role = guild.roles[1]
    status, reply = await sim.control("POST", "messages", message_body(
        sim, content=f"hey <@{other}> and <@&{role.id}> @everyone"))
    assert status == 200 and reply["delivered"] is True and reply["shard_id"] == 0
    d = sim.hub.of("MESSAGE_CREATE")[-1]
    assert d["id"] == reply["id"] and d["author"]["id"] == str(guild.member_ids[0]) and d["author"]["bot"] is False
    assert d["guild_id"] == str(guild.id) and "user" not in d["member"] and "roles" in d["member"]
    assert [m["id"] for m in d["mentions"]] == [str(other)] and d["mentions"][0]["member"]["joined_at"]
    assert d["mention_roles"] == [str(role.id)] and d["mention_everyone"] is True
    listed = await (await sim.api("GET", f"/channels/{guild.channels[0].id}/messages")).json()
    assert listed[0]["id"] == reply["id"] and "member" not in listed[0]
    status, reply2 = await sim.control("POST", "messages", message_body(sim, reply_to=reply["id"]))
    assert sim.hub.of("MESSAGE_CREATE")[-1]["message_reference"]["message_id"] == reply["id"]
    assert int(reply2["id"]) > int(reply["id"])


async def test_injected_message_without_a_session_is_not_delivered(sim: SimApp) -> None:
    sim.hub.live = False
    status, reply = await sim.control("POST", "messages", message_body(sim))
    assert status == 200 and reply["delivered"] is False
    listed = await (await sim.api("GET", f"/channels/{sim.text_channel()}/messages")).json()
    assert listed[0]["id"] == reply["id"]  # still in the channel's history, as on Discord


async def test_dm_message_from_a_user(sim: SimApp) -> None:
    user = sim.guild().member_ids[2]
    status, reply = await sim.control("POST", "messages", {"author_id": str(user), "content": "feedback: nice"})
    assert status == 200
    assert sim.hub.events[-1][:3] == ("shard", "MESSAGE_CREATE", 0)
    assert "guild_id" not in sim.hub.events[-1][3]
    status, view = await sim.control("GET", f"dms/{user}")
    assert status == 200 and view["channel"]["id"] == reply["channel_id"]
    assert (await sim.control("GET", f"dms/{sim.guild().member_ids[3]}"))[0] == 404


@pytest.mark.parametrize(("change", "needle"), [
    ({"author_id": None}, "author_id is required"),
    ({"content": None}, "content is required"),
    ({"content": ""}, "content must not be empty"),
    ({"content": 7}, "content must be a string"),
    ({"guild_id": "abc"}, "guild_id must be an id"),
    ({"guild_id": 12.5}, "guild_id must be an id"),
    ({"guild_id": "123456789012345678"}, "unknown guild"),
    ({"channel_id": "123456789012345678"}, "is not a channel of guild"),
    ({"channel_id": None}, "channel_id is required"),
    ({"author_id": "123456789012345678"}, "unknown user"),
])
async def test_message_input_errors(sim: SimApp, change: dict[str, Any], needle: str) -> None:
    body = {k: v for k, v in {**message_body(sim), **change}.items() if v is not None}
    status, reply = await sim.control("POST", "messages", body)
    assert status == 400 and needle in reply["error"], reply
    assert not sim.hub.events


async def test_non_member_and_foreign_channel_are_refused(sim: SimApp) -> None:
    g0, g1 = sim.guild(0), sim.guild(1)
    outsider = next(u for u in g1.member_ids if u not in set(g0.member_ids))
    status, reply = await sim.control("POST", "messages", message_body(sim, author_id=str(outsider)))
    assert status == 400 and "not a member" in reply["error"]
    status, reply = await sim.control("POST", "messages", message_body(sim, channel_id=str(g1.channels[0].id)))
    assert status == 400
    status, reply = await sim.control("POST", "messages", message_body(sim, author_id=str(sim.world.application_id)))
    assert status == 400


async def test_bad_bodies_are_400_not_500(sim: SimApp) -> None:
    for path in ("messages", "interactions", "faults", "load"):
        resp = await sim.client.post(f"/_sim/{path}", data=b"{nope", headers={"Content-Type": "application/json"})
        assert resp.status == 400, path
        assert resp.headers["Content-Type"] == "application/json"
        assert "not valid JSON" in (await resp.json())["error"]
        resp = await sim.client.post(f"/_sim/{path}", json=[1, 2])
        assert resp.status == 400 and "JSON object" in (await resp.json())["error"]


@pytest.mark.parametrize(("change", "needle"), [
    ({"user_id": None}, "user_id is required"),
    ({"name": None}, "name is required"),
    ({"name": 5}, "name must be a string"),
    ({"kind": "button"}, "kind must be one of"),
    ({"timeout": "soon"}, "timeout must be a number"),
    ({"timeout": 0}, "timeout must be between"),
    ({"options": "x"}, "options must be a list"),
    ({"options": [{"name": "a"}]}, "options[0].type"),
    ({"options": [{"name": "a", "type": 3}]}, "options[0].value is required"),
    ({"options": [{"name": "u", "type": 6, "value": "123456789012345678"}]}, "no user, role or channel"),
    ({"guild_id": "123456789012345678"}, "unknown guild"),
    ({"channel_id": "123456789012345678"}, "not a channel of guild"),
    ({"user_id": "123456789012345678"}, "unknown user"),
    ({"kind": "component"}, "custom_id is required"),
    ({"kind": "modal_submit", "custom_id": "m"}, "needs components"),
    ({"message_id": "123456789012345678"}, "is not in channel"),
    ({"command_type": 3}, "target_id is required"),
    ({"type": 4}, "type must be 2"),
    ({"wait": "no"}, "wait must be true or false"),
])
async def test_interaction_input_errors(sim: SimApp, change: dict[str, Any], needle: str) -> None:
    guild = sim.guild()
    base = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id), "user_id": str(guild.member_ids[0]),
            "name": "ping", "options": [], "timeout": 1}
    body = {k: v for k, v in {**base, **change}.items() if v is not None}
    status, reply = await sim.control("POST", "interactions", body)
    assert status == 400 and needle in reply["error"], reply
    assert not sim.hub.events and len(sim.state.interactions) == 0


async def test_gateway_faults_pass_through_and_rest_faults_queue(sim: SimApp) -> None:
    status, reply = await sim.control("POST", "faults", {"kind": "disconnect", "shard_id": 0, "code": 4000,
                                                         "resumable": False})
    assert status == 200 and reply["applied"] == 1
    assert sim.hub.faults == [("disconnect", 0, False, 4000)]
    await sim.control("POST", "faults", {"kind": "reconnect"})
    assert sim.hub.faults[-1] == ("reconnect", None, True, 4000)
    status, reply = await sim.control("POST", "faults", {"kind": "latency", "ms": 5, "count": 3})
    assert reply["applied"] == 3
    assert (await sim.control("GET", "faults"))[1]["rest_faults"] == [
        {"kind": "latency", "route": None, "count": 3, "ms": 5.0, "if_client_gone": "complete"}]
    assert (await sim.control("DELETE", "faults"))[1] == {"cleared": 1}
    assert sim.state.rest_faults == []


async def test_a_dispatch_fault_sends_its_data_as_is(sharded: SimApp) -> None:
    guild = sharded.guild()
    malformed = {"guild_id": str(guild.id), "member": {"roles": [{"id": "1"}]}, "content": "!ping"}
    status, reply = await sharded.control("POST", "faults", {"kind": "dispatch", "event": "MESSAGE_CREATE",
                                                              "guild_id": str(guild.id), "data": malformed})
    assert status == 200 and reply == {"applied": 1, "kind": "dispatch", "event": "MESSAGE_CREATE"}
    assert sharded.hub.events[-1] == ("guild", "MESSAGE_CREATE", guild.id, malformed)
    status, reply = await sharded.control("POST", "faults", {"kind": "dispatch", "event": "GUILD_ROLE_CREATE",
                                                              "shard_id": 2, "data": {"role": None}})
    assert status == 200 and reply["applied"] == 1
    assert sharded.hub.events[-1] == ("shard", "GUILD_ROLE_CREATE", 2, {"role": None})
    status, reply = await sharded.control("POST", "faults", {"kind": "dispatch", "event": "TYPING_START", "data": {}})
    assert status == 200 and reply["applied"] == 4  # every live shard
    assert sharded.state.rest_faults == []


@pytest.mark.parametrize(("body", "needle"), [
    ({"kind": "dispatch", "data": {}}, "event is required"),
    ({"kind": "dispatch", "event": "message create", "data": {}}, "event must be an event name"),
    ({"kind": "dispatch", "event": "MESSAGE_CREATE"}, "data must be a JSON object"),
    ({"kind": "dispatch", "event": "MESSAGE_CREATE", "data": [1]}, "data must be a JSON object"),
    ({"kind": "dispatch", "event": "MESSAGE_CREATE", "data": {}, "guild_id": "x"}, "guild_id must be an id"),
])
async def test_dispatch_fault_input_errors(sim: SimApp, body: dict[str, Any], needle: str) -> None:
    status, reply = await sim.control("POST", "faults", body)
    assert status == 400 and needle in reply["error"], reply
    assert sim.hub.events == []


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "kind is required"),
    ({"kind": "explode"}, "kind must be one of"),
    ({"kind": "disconnect", "code": 99}, "code must be between"),
    ({"kind": "disconnect", "shard_id": "x"}, "shard_id must be an integer"),
    ({"kind": "invalid_session", "resumable": "yes"}, "resumable must be true or false"),
    ({"kind": "http_error", "status": 418}, "status must be one of"),
    ({"kind": "http_error", "count": 0}, "count must be between"),
    ({"kind": "http_error", "status": 500, "scope": "shared"}, "only apply to status 429"),
    ({"kind": "http_error", "status": 429, "scope": "everyone"}, "scope must be one of"),
    ({"kind": "latency"}, "ms is required"),
    ({"kind": "latency", "ms": -1}, "ms must be between"),
    ({"kind": "latency", "ms": 5, "route": 7}, "route must be a string"),
    ({"kind": "latency", "ms": 5, "if_client_gone": "shrug"}, "if_client_gone must be one of"),
    ({"kind": "http_error", "status": 500, "if_client_gone": "drop"}, "only applies to latency faults"),
])
async def test_fault_input_errors(sim: SimApp, body: dict[str, Any], needle: str) -> None:
    status, reply = await sim.control("POST", "faults", body)
    assert status == 400 and needle in reply["error"], reply
    assert sim.state.rest_faults == [] and sim.hub.faults == []


async def test_stats_and_reset(sim: SimApp) -> None:
    await sim.api("GET", "/users/@me", auth=False)
    await sim.api("POST", f"/channels/{sim.text_channel()}/messages", json={"content": "x"})
    sim.state.stats.shards[0].guilds = 8
    sim.state.stats.shards[0].identifies = 2
    status, stats = await sim.control("GET", "stats")
    assert status == 200
    for key in ("identifies", "identify_violations", "auth_failures", "resumes", "rate_limited", "invalid_requests",
                "dispatched", "acknowledged", "lost", "shards", "live_shards", "identify_remaining", "load"):
        assert key in stats
    assert stats["requests"] == 2 and stats["invalid_requests"] == 1 and stats["messages_created"] == 1
    assert stats["live_shards"] == {"0": 1} and stats["identify_remaining"] == 997
    assert stats["rate_limited"] == {"user": 0, "global": 0, "shared": 0}
    status, reply = await sim.control("POST", "reset-stats", {})
    assert status == 200
    _, after = await sim.control("GET", "stats")
    assert after["requests"] == 0 and after["invalid_requests"] == 0 and after["messages_created"] == 0
    assert after["shards"]["0"]["guilds"] == 8 and after["shards"]["0"]["identifies"] == 0  # gauges survive


async def test_reset_can_clear_rate_limit_buckets(sim: SimApp) -> None:
    channel = sim.text_channel()
    for _ in range(5):
        await sim.api("POST", f"/channels/{channel}/messages", json={"content": "x"})
    assert (await sim.api("POST", f"/channels/{channel}/messages", json={"content": "x"})).status == 429
    await sim.control("POST", "reset-stats", {"rate_limits": True})
    assert (await sim.api("POST", f"/channels/{channel}/messages", json={"content": "x"})).status == 200


async def test_load_stream_at_a_rate(sharded: SimApp) -> None:
    status, reply = await sharded.control("POST", "load", {"rate": 400, "seconds": 0.5})
    assert status == 202 and reply == {"started": True, "events": 200, "kind": "message_create", "guilds": 40,
                                       "shard_id": None}

    async def finished() -> dict[str, Any] | None:
        status = (await sharded.control("GET", "load"))[1]
        return status if not status["running"] else None

    done = await wait_for(finished, timeout=10, message="the load run to finish")
    assert done["sent"] == 200 and done["delivered"] == 200 and done["error"] is None
    assert 0.3 <= done["elapsed_s"] <= 3.0  # paced, not a burst
    events = sharded.hub.of("MESSAGE_CREATE")
    assert len(events) == 200 and len({e["id"] for e in events}) == 200
    assert len({e["guild_id"] for e in events}) == 40  # spread over every guild
    first = events[0]
    assert first["author"]["bot"] is False and first["member"]["roles"] is not None
    assert first["content"] == "load test message" and first["channel_id"]


async def test_load_at_one_shard_as_fast_as_possible(sharded: SimApp) -> None:
    status, reply = await sharded.control("POST", "load", {"rate": 0, "count": 500, "kind": "typing_start",
                                                           "target": "shard", "shard_id": 2})
    assert status == 202 and reply["events"] == 500

    async def finished() -> bool:
        return not (await sharded.control("GET", "load"))[1]["running"]

    await wait_for(finished, timeout=10, message="the load run to finish")
    events = [(target, d) for how, e, target, d in sharded.hub.events if e == "TYPING_START"]
    assert len(events) == 500
    assert {(int(d["guild_id"]) >> 22) % 4 for _, d in events} == {2}
    assert all(d["member"]["user"]["id"] == d["user_id"] for _, d in events)


async def test_new_load_replaces_the_old_and_can_be_stopped(sharded: SimApp) -> None:
    await sharded.control("POST", "load", {"rate": 50, "seconds": 60, "kind": "presence_update"})
    status, reply = await sharded.control("POST", "load", {"rate": 50, "seconds": 60})
    assert status == 202
    status, running = await sharded.control("GET", "load")
    assert running["running"] and running["kind"] == "message_create"
    status, stopped = await sharded.control("DELETE", "load")
    assert stopped["running"] is False
    sent = stopped["sent"]
    assert (await sharded.control("GET", "load"))[1]["sent"] == sent


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "rate is required"),
    ({"rate": -1, "seconds": 1}, "rate must be between"),
    ({"rate": 10}, "give seconds"),
    ({"rate": 0}, "needs seconds or count"),
    ({"rate": 10, "seconds": 1, "kind": "guild_create"}, "kind must be one of"),
    ({"rate": 10, "seconds": 1, "target": "shard"}, "shard_id is required"),
    ({"rate": 10, "seconds": 1, "target": "shard", "shard_id": 9}, "shard_id must be between"),
])
async def test_load_input_errors(sharded: SimApp, body: dict[str, Any], needle: str) -> None:
    status, reply = await sharded.control("POST", "load", body)
    assert status == 400 and needle in reply["error"], reply
    assert (await sharded.control("GET", "load"))[1]["running"] is False


async def test_pending_interactions_are_bounded(sim: SimApp, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulator import control_interactions

    monkeypatch.setattr(control_interactions, "MAX_PENDING", 3)
    guild = sim.guild()
    body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id), "user_id": str(guild.member_ids[0]),
            "name": "ping", "wait": False}
    ids = [(await sim.control("POST", "interactions", body))[1]["interaction_id"] for _ in range(5)]
    assert len(sim.state.interactions) == 3
    assert [(await sim.control("GET", f"interactions/{i}"))[0] for i in ids] == [404, 404, 200, 200, 200]


@pytest.mark.parametrize("kind", ["message_create", "typing_start", "presence_update"])
async def test_load_uses_a_pre_serialised_fast_path_when_the_hub_has_one(kind: str) -> None:
    """A hub with ``dispatch_guild_json`` gets JSON text that decodes to the same events as the dict path."""
    async with running_sim(SimConfig(guilds=6, guild_sizes="fixed", members_per_guild=4, token="sim-token")) as app:
        raw: list[tuple[int, str, dict[str, Any]]] = []

        def dispatch_guild_json(guild_id: int, event: str, d_json: str) -> bool:
            raw.append((guild_id, event, json.loads(d_json)))
            return True

        app.hub.dispatch_guild_json = dispatch_guild_json  # type: ignore[attr-defined]
        status, _ = await app.control("POST", "load", {"rate": 0, "count": 12, "kind": kind})
        assert status == 202
        await wait_for(lambda: len(raw) == 12, message="12 fast-path events")
        del app.hub.dispatch_guild_json  # type: ignore[attr-defined]
        await app.control("POST", "load", {"rate": 0, "count": 12, "kind": kind})
        await wait_for(lambda: len(app.hub.events) == 12, message="12 dict-path events")
        slow = [(target, event, data) for _, event, target, data in app.hub.events]
        varying = {"message_create": "id", "typing_start": "timestamp", "presence_update": None}[kind]
        for (g1, e1, d1), (g2, e2, d2) in zip(raw, slow, strict=True):
            assert (g1, e1) == (g2, e2) and e1 == kind.upper()
            if varying is not None:
                assert d1.pop(varying) and d2.pop(varying)
            if kind == "message_create":  # stamped when each run's templates were built
                assert d1.pop("timestamp") and d2.pop("timestamp")
            assert d1 == d2
        if kind == "message_create":
            assert len({d["channel_id"] for _, _, d in raw}) == 6


async def test_load_mixes_in_commands_from_distinct_members() -> None:
    """``command``/``command_every``: every k-th MESSAGE_CREATE is the command, each from the next user."""
    async with running_sim(SimConfig(guilds=3, guild_sizes="fixed", members_per_guild=4, token="sim-token")) as app:
        status, _ = await app.control("POST", "load", {"rate": 0, "count": 30, "command": "!ping",
                                                        "command_every": 5})
        assert status == 202
        await wait_for(lambda: len(app.hub.events) == 30, message="30 events")
        contents = [data["content"] for _, _, _, data in app.hub.events]
        assert [i for i, c in enumerate(contents) if c == "!ping"] == [0, 5, 10, 15, 20, 25]
        pings = [data for _, _, _, data in app.hub.events if data["content"] == "!ping"]
        authors = [(p["guild_id"], p["author"]["id"]) for p in pings]
        assert len(set(authors)) == 6 and len({g for g, _ in authors}) == 3
        world = app.state.world
        for p in pings:
            guild = world.guild(int(p["guild_id"]))
            assert world.is_member(guild, int(p["author"]["id"])) and p["member"]["roles"] is not None
        for body, error in (({"command": "!ping"}, "go together"), ({"command_every": 3}, "go together"),
                            ({"command": "!x", "command_every": 2, "kind": "presence_update"}, "go together")):
            status, reply = await app.control("POST", "load", {"rate": 0, "count": 5, **body})
            assert status == 400 and error in reply["error"]


async def test_load_varies_the_text_and_mixes_in_a_share_of_spam() -> None:
    """``vary_content`` ends each text with the message's id; ``spam``/``spam_every`` mix in other messages."""
    async with running_sim(SimConfig(guilds=3, guild_sizes="fixed", members_per_guild=4, token="sim-token")) as app:
        fast: list[dict[str, Any]] = []

        def dispatch_guild_json(guild_id: int, event: str, d_json: str) -> bool:
            fast.append(json.loads(d_json))
            return True

        body = {"rate": 0, "count": 21, "content": "chat", "vary_content": True, "spam": "discord.gg/spam",
                "spam_every": 4, "command": "!ping", "command_every": 10}
        assert (await app.control("POST", "load", body))[0] == 202
        await wait_for(lambda: len(app.hub.events) == 21, message="21 dict-path events")
        app.hub.dispatch_guild_json = dispatch_guild_json  # type: ignore[attr-defined]
        assert (await app.control("POST", "load", body))[0] == 202
        await wait_for(lambda: len(fast) == 21, message="21 fast-path events")
        del app.hub.dispatch_guild_json  # type: ignore[attr-defined]
        slow = [data for _, _, _, data in app.hub.events]
        for run in (slow, fast):
            expected = ["!ping" if n % 10 == 0 else "discord.gg/spam" if n % 4 == 2 else f"chat {d['id']}"
                        for n, d in enumerate(run)]
            assert [d["content"] for d in run] == expected
            assert len({d["id"] for d in run}) == 21
        for a, b in zip(slow, fast, strict=True):
            for key in ("id", "timestamp", "content"):
                a.pop(key), b.pop(key)
            assert a == b
        for bad, error in (({"spam": "x"}, "go together"), ({"vary_content": True, "kind": "typing_start"}, "need")):
            status, reply = await app.control("POST", "load", {"rate": 0, "count": 5, **bad})
            assert status == 400 and error in reply["error"]
