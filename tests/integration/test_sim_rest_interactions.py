"""Interactions end to end inside the simulator: inject, a fake bot answers over HTTP, the control API reports.

The fake bot reads INTERACTION_CREATE from the recording hub and answers exactly as discord.py does:
``POST /interactions/{id}/{token}/callback?with_response=1`` without auth, follow-ups and edits on
``/webhooks/{application_id}/{token}``, JSON or multipart with ``payload_json``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.test_sim_rest import SimApp, assert_exact_json, running_sim

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[SimApp]:
    async with running_sim() as app:
        yield app


def inject_body(sim: SimApp, **extra: Any) -> dict[str, Any]:
    guild = sim.guild()
    body = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id), "user_id": str(guild.member_ids[0]),
            "name": "ping", "options": [], "timeout": 5}
    body.update(extra)
    return body


async def callback(sim: SimApp, d: dict[str, Any], body: Any, *, with_response: bool = True,
                   files: list[tuple[str, bytes]] | None = None) -> aiohttp.ClientResponse:
    url = f"/interactions/{d['id']}/{d['token']}/callback" + ("?with_response=1" if with_response else "")
    if files:
        form = aiohttp.FormData(quote_fields=False)
        form.add_field("payload_json", json.dumps(body))
        for i, (name, content) in enumerate(files):
            form.add_field(f"files[{i}]", content, filename=name, content_type="application/octet-stream")
        return await sim.api("POST", url, auth=False, data=form)
    return await sim.api("POST", url, auth=False, json=body)


async def inject(sim: SimApp, body: dict[str, Any]) -> tuple[asyncio.Task[tuple[int, Any]], dict[str, Any]]:
    """Start ``POST /_sim/interactions`` and return it with the INTERACTION_CREATE the bot received."""
    task = asyncio.create_task(sim.control("POST", "interactions", body))
    d = await sim.hub.next("INTERACTION_CREATE")
    return task, d


async def test_slash_command_round_trip(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim, options=[{"name": "text", "type": 3, "value": "hi"}]))
    guild = sim.guild()
    assert d["type"] == 2 and d["application_id"] == str(sim.world.application_id) and d["version"] == 1
    assert d["guild_id"] == str(guild.id) and d["channel"]["guild_id"] == str(guild.id)
    assert d["channel"]["id"] == d["channel_id"] == str(guild.channels[0].id) and "permissions" in d["channel"]
    assert d["member"]["user"]["id"] == str(guild.member_ids[0]) and int(d["member"]["permissions"]) > 0
    assert d["data"]["name"] == "ping" and d["data"]["type"] == 1
    assert d["data"]["options"] == [{"name": "text", "type": 3, "value": "hi"}]
    assert "guild_id" not in d["data"]  # an unregistered command is looked up globally
    for key in ("token", "attachment_size_limit", "app_permissions", "locale", "guild_locale", "entitlements",
                "authorizing_integration_owners", "context"):
        assert key in d
    assert sim.hub.events[-1][2] == guild.id  # dispatched to the guild's shard

    resp = await callback(sim, d, {"type": 4, "data": {"content": "Pong!"}})
    assert resp.status == 200
    assert_exact_json(resp)
    answer = await resp.json()
    assert answer["interaction"]["id"] == d["id"] and answer["interaction"]["type"] == 2
    assert answer["interaction"]["response_message_loading"] is False
    assert answer["interaction"]["response_message_ephemeral"] is False
    message = answer["resource"]["message"]
    assert answer["resource"]["type"] == 4 and answer["interaction"]["response_message_id"] == message["id"]
    assert message["content"] == "Pong!" and message["type"] == 20
    assert message["interaction_metadata"]["user"]["id"] == str(guild.member_ids[0])

    status, reply = await task
    assert status == 200, reply
    assert reply["interaction_id"] == d["id"] and reply["callback"] == {"type": 4, "data": {"content": "Pong!"}}
    assert reply["latency_ms"] >= 0 and reply["response_message_id"] == message["id"]
    assert sim.state.stats.acknowledged == 1
    # the response is a real channel message, echoed to the bot like any other
    listed = await (await sim.api("GET", f"/channels/{d['channel_id']}/messages")).json()
    assert listed[0]["id"] == message["id"]
    assert sim.hub.of("MESSAGE_CREATE")[-1]["id"] == message["id"]


async def test_without_with_response_the_callback_is_204(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim))
    resp = await callback(sim, d, {"type": 4, "data": {"content": "ok"}}, with_response=False)
    assert resp.status == 204
    assert (await task)[0] == 200


async def test_double_ack_unknown_interaction_and_bad_token(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim))
    assert (await callback(sim, d, {"type": 5})).status == 200
    resp = await callback(sim, d, {"type": 4, "data": {"content": "again"}})
    assert resp.status == 400
    assert await resp.json() == {"message": "Interaction has already been acknowledged.", "code": 40060}
    resp = await callback(sim, {"id": d["id"], "token": "wrong"}, {"type": 4, "data": {"content": "x"}})
    assert resp.status == 404 and (await resp.json())["code"] == 10062
    resp = await callback(sim, {"id": "123", "token": d["token"]}, {"type": 4, "data": {"content": "x"}})
    assert resp.status == 404
    assert (await task)[1]["callback"] == {"type": 5}
    assert sim.state.stats.acknowledged == 1


async def test_callback_validation(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim, timeout=2))
    for bad in ({"type": 1}, {"type": "4"}, {"type": 4, "data": []}, [1], {"type": 6}, {"type": 7},
                {"type": 9, "data": {"title": "no id"}}, {"type": 4, "data": {"content": ""}}):
        resp = await callback(sim, d, bad)
        assert resp.status == 400, (bad, await resp.text())
        assert_exact_json(resp)
    resp = await sim.api("POST", f"/interactions/{d['id']}/{d['token']}/callback", auth=False, data=b"{oops",
                         headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert sim.state.stats.acknowledged == 0
    assert (await callback(sim, d, {"type": 4, "data": {"content": "fine"}})).status == 200
    assert (await task)[0] == 200


async def test_no_callback_is_a_504_and_a_late_one_is_still_recorded(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim, timeout=0.2))
    status, reply = await task
    assert status == 504
    assert reply == {"error": "no callback within 0.2s", "interaction_id": d["id"], "shard_id": 0}
    assert (await callback(sim, d, {"type": 4, "data": {"content": "late"}})).status == 200
    status, report = await sim.control("GET", f"interactions/{d['id']}")
    assert status == 200 and report["acknowledged"] and report["callback"]["data"]["content"] == "late"


async def test_deferred_then_followups_and_original_edits(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim))
    app_id = sim.world.application_id
    resp = await sim.api("POST", f"/webhooks/{app_id}/{d['token']}?wait=1", auth=False, json={"content": "early"})
    assert resp.status == 404 and (await resp.json())["code"] == 10015  # no follow-up before the response
    answer = await (await callback(sim, d, {"type": 5, "data": {"flags": 64}})).json()
    assert answer["interaction"]["response_message_loading"] is True
    assert answer["interaction"]["response_message_ephemeral"] is True
    loading = answer["resource"]["message"]
    assert loading["flags"] & 128 and loading["flags"] & 64
    assert (await task)[0] == 200

    base = f"/webhooks/{app_id}/{d['token']}"
    first = await (await sim.api("POST", base + "?wait=1", auth=False, json={"content": "done"})).json()
    assert first["id"] == loading["id"] and first["content"] == "done" and not first["flags"] & 128
    second = await (await sim.api("POST", base + "?wait=1", auth=False, json={"content": "more"})).json()
    assert second["id"] != loading["id"]
    resp = await sim.api("PATCH", base + "/messages/@original", auth=False, json={"content": "edited"})
    assert (await resp.json())["content"] == "edited"
    got = await (await sim.api("GET", base + "/messages/@original", auth=False)).json()
    assert got["id"] == loading["id"] and got["content"] == "edited"
    resp = await sim.api("PATCH", base + f"/messages/{second['id']}", auth=False, json={"content": "more!"})
    assert (await resp.json())["content"] == "more!"
    assert (await sim.api("DELETE", base + f"/messages/{second['id']}", auth=False)).status == 204
    assert (await sim.api("GET", base + f"/messages/{second['id']}", auth=False)).status == 404
    # "wait is always true" for interaction follow-ups: 200 and the message, whatever ?wait says
    resp = await sim.api("POST", base + "?wait=false", auth=False, json={"content": "nowait"})
    assert resp.status == 200 and (await resp.json())["content"] == "nowait"

    status, report = await sim.control("GET", f"interactions/{d['id']}")
    assert status == 200
    assert report["callback"] == {"type": 5, "data": {"flags": 64}}
    assert [f.get("content") for f in report["followups"]] == ["done", "more", "more!", "nowait"]
    assert report["followups"][0]["replaced_original"] is True
    assert report["original_edits"] == [{"content": "edited"}]
    assert report["original"]["content"] == "edited"
    # the whole exchange was ephemeral except the second and fourth follow-ups: only those reached the channel
    listed = await (await sim.api("GET", f"/channels/{d['channel_id']}/messages")).json()
    assert [m["content"] for m in listed] == ["nowait"]
    resp = await sim.api("POST", f"/webhooks/{app_id}/not-a-token", auth=False, json={"content": "x"})
    assert resp.status == 404


async def test_multipart_callback_records_the_files(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim, name="privacy"))
    payload = {"type": 4, "data": {"content": "your data", "attachments": [{"id": 0, "filename": "export.json"}],
                                   "flags": 64}}
    blob = json.dumps({"user": 1, "rows": list(range(500))}).encode()
    resp = await callback(sim, d, payload, files=[("export.json", blob)])
    assert resp.status == 200, await resp.text()
    message = (await resp.json())["resource"]["message"]
    assert message["attachments"][0]["filename"] == "export.json" and message["attachments"][0]["size"] == len(blob)
    status, reply = await task
    assert reply["callback"]["files"] == [{"name": "files[0]", "filename": "export.json", "size": len(blob)}]
    assert reply["callback"]["data"]["content"] == "your data"
    assert not sim.hub.of("MESSAGE_CREATE")  # ephemeral: not dispatched


async def test_multipart_without_payload_is_rejected(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim, timeout=1))
    form = aiohttp.FormData()
    form.add_field("something", "else")
    resp = await sim.api("POST", f"/interactions/{d['id']}/{d['token']}/callback", auth=False, data=form)
    assert resp.status == 400
    assert (await task)[0] == 504


async def test_component_click_updates_the_message(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim))
    row = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "go"}]}]
    message = (await (await callback(sim, d, {"type": 4, "data": {"content": "press", "components": row}})).json())
    message = message["resource"]["message"]
    await task
    body = inject_body(sim, kind="component", custom_id="go", component_type=2, message_id=message["id"])
    task, d = await inject(sim, body)
    assert d["type"] == 3 and d["data"] == {"custom_id": "go", "component_type": 2}
    assert d["message"]["id"] == message["id"] and d["message"]["components"] == row
    resp = await callback(sim, d, {"type": 7, "data": {"content": "pressed", "components": []}})
    updated = (await resp.json())["resource"]["message"]
    assert updated["id"] == message["id"] and updated["content"] == "pressed"
    assert sim.hub.of("MESSAGE_UPDATE")[-1]["content"] == "pressed"
    assert (await task)[0] == 200
    # deferred update, then edit of @original edits the clicked message
    task, d = await inject(sim, body)
    answer = await (await callback(sim, d, {"type": 6})).json()
    assert answer["resource"] == {"type": 6} and answer["interaction"]["response_message_id"] is None
    await task
    resp = await sim.api("PATCH", f"/webhooks/{sim.world.application_id}/{d['token']}/messages/@original",
                         auth=False, json={"content": "later"})
    assert (await resp.json())["id"] == message["id"]


async def test_modal_then_modal_submit(sim: SimApp) -> None:
    task, d = await inject(sim, inject_body(sim, name="feedback"))
    modal = {"custom_id": "fb", "title": "Feedback",
             "components": [{"type": 1, "components": [{"type": 4, "custom_id": "text", "style": 2, "label": "T"}]}]}
    answer = await (await callback(sim, d, {"type": 9, "data": modal})).json()
    assert answer["resource"] == {"type": 9}
    assert (await task)[1]["callback"]["data"]["custom_id"] == "fb"
    task, d = await inject(sim, inject_body(sim, kind="modal_submit", custom_id="fb", values={"text": "great bot"}))
    assert d["type"] == 5
    assert d["data"] == {"custom_id": "fb", "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "text", "value": "great bot"}]}]}
    assert (await callback(sim, d, {"type": 9, "data": modal})).status == 400  # no modal answering a modal
    assert (await callback(sim, d, {"type": 4, "data": {"content": "thanks", "flags": 64}})).status == 200
    assert (await task)[0] == 200


async def test_dm_interaction_goes_to_shard_zero_with_a_user(sim: SimApp) -> None:
    user_id = sim.guild().member_ids[1]
    task, d = await inject(sim, {"user_id": str(user_id), "name": "help", "timeout": 5})
    assert "guild_id" not in d and "member" not in d and d["user"]["id"] == str(user_id)
    assert d["channel"]["type"] == 1 and d["context"] == 1
    assert sim.hub.events[-1][:3] == ("shard", "INTERACTION_CREATE", 0)
    assert (await callback(sim, d, {"type": 4, "data": {"content": "hi"}})).status == 200
    assert (await task)[0] == 200
    assert sim.hub.events[-1][:3] == ("shard", "MESSAGE_CREATE", 0)


async def test_registered_commands_and_resolved_options(sim: SimApp) -> None:
    guild = sim.guild()
    app_id = sim.world.application_id
    cmds = await (await sim.api("PUT", f"/applications/{app_id}/guilds/{guild.id}/commands", json=[
        {"name": "warn", "description": "Warn", "options": [{"name": "who", "type": 6, "description": "x"}]}])).json()
    target = guild.member_ids[4]
    role = guild.roles[1]
    body = inject_body(sim, name="warn", options=[{"name": "who", "type": 6, "value": str(target)},
                                                  {"name": "role", "type": 8, "value": str(role.id)},
                                                  {"name": "where", "type": 7, "value": str(guild.channels[1].id)}])
    task, d = await inject(sim, body)
    assert d["data"]["id"] == cmds[0]["id"] and d["data"]["guild_id"] == str(guild.id)
    resolved = d["data"]["resolved"]
    assert resolved["users"][str(target)]["id"] == str(target)
    assert "permissions" in resolved["members"][str(target)] and "user" not in resolved["members"][str(target)]
    assert resolved["roles"][str(role.id)]["name"] == role.name
    assert resolved["channels"][str(guild.channels[1].id)]["permissions"]
    assert (await callback(sim, d, {"type": 4, "data": {"content": "warned"}})).status == 200
    await task
    # the synthetic id of an unregistered command is stable
    ids = []
    for _ in range(2):
        task, d = await inject(sim, inject_body(sim, name="nothere"))
        ids.append(d["data"]["id"])
        await callback(sim, d, {"type": 4, "data": {"content": "x"}})
        await task
    assert ids[0] == ids[1]


async def test_user_context_menu_resolves_the_target(sim: SimApp) -> None:
    guild = sim.guild()
    target = guild.member_ids[5]
    task, d = await inject(sim, inject_body(sim, name="Profile", command_type=2, target_id=str(target)))
    assert d["data"]["type"] == 2 and d["data"]["target_id"] == str(target)
    assert str(target) in d["data"]["resolved"]["users"]
    await callback(sim, d, {"type": 4, "data": {"content": "x"}})
    await task


async def test_undelivered_interaction_is_503(sim: SimApp) -> None:
    sim.hub.live = False
    status, reply = await sim.control("POST", "interactions", inject_body(sim))
    assert status == 503 and "interaction_id" in reply and "no live or resumable session" in reply["error"]
    assert len(sim.state.interactions) == 0


async def test_fire_and_forget_then_poll(sim: SimApp) -> None:
    status, reply = await sim.control("POST", "interactions", inject_body(sim, wait=False))
    assert status == 202
    d = await sim.hub.next("INTERACTION_CREATE")
    assert d["id"] == reply["interaction_id"]
    status, report = await sim.control("GET", f"interactions/{d['id']}")
    assert status == 200 and report["acknowledged"] is False and report["callback"] is None
    await callback(sim, d, {"type": 4, "data": {"content": "later"}})
    status, report = await sim.control("GET", f"interactions/{d['id']}")
    assert report["acknowledged"] is True and report["latency_ms"] >= 0
    assert (await sim.control("GET", "interactions/42"))[0] == 404
    assert (await sim.control("GET", "interactions/abc"))[0] == 400
