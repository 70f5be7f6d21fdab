"""Feedback end to end: modal and text submission, moderator list with pages, resolve with a DM."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shard.bot import ClusterBot
from shard.pipeline.context import DM_POINTER
from tests.e2e.commands import (
    CommandBotFactory,
    World,
    channel_messages,
    content_of,
    dm_channel,
    dm_with,
    is_ephemeral,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.procs import SimulatorProc, http_json
from tests.support import view_listening, wait_for

pytestmark = pytest.mark.e2e


async def interact(sim: SimulatorProc, world: World, user: str, *, bot: ClusterBot, **body: Any) -> dict[str, Any]:
    """A click or a form submission, sent once ``bot`` listens for it (see :func:`view_listening`)."""
    custom_id = str(body["custom_id"])
    await wait_for(lambda: view_listening(bot, custom_id), message=f"the bot to listen for {custom_id}")
    payload = {"guild_id": world.guild_id, "channel_id": world.channel_id, "user_id": user, "timeout": 15, **body}
    status, reply = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/interactions", payload)
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["label"]: c for row in message.get("components") or [] for c in row["components"]}


async def test_feedback(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    bot = await command_bot()
    user = world.members[0]
    # slash without text: a modal. A raw client can send any text: too much is refused clearly
    opened = await slash(sim, world, user, "feedback", sub("submit"))
    assert opened["callback"]["type"] == 9, opened
    modal = opened["callback"]["data"]
    field = modal["components"][0]["components"][0]["custom_id"]
    too_long = await interact(sim, world, user, bot=bot, kind="modal_submit", custom_id=modal["custom_id"],
                              values={field: "x" * 2001})
    assert is_ephemeral(too_long) and "at most 2000 characters" in content_of(too_long)
    opened = await slash(sim, world, user, "feedback", sub("submit"))
    modal = opened["callback"]["data"]
    field = modal["components"][0]["components"][0]["custom_id"]
    submitted = await interact(sim, world, user, bot=bot, kind="modal_submit", custom_id=modal["custom_id"],
                               values={field: "Great bot @everyone **really**"})
    assert is_ephemeral(submitted) and content_of(submitted) == "Thanks! Your feedback is #1."
    # prefix with text: its answer is private, so it comes by DM; the channel only reads where it went
    text_reply = await prefix(sim, world, user, "!feedback submit the reminders are late")
    assert text_reply["content"] == DM_POINTER
    await dm_with(sim, user, "Thanks! Your feedback is #2.")
    # prefix without text explains what to do (why it failed is said in place)
    empty = await prefix(sim, world, world.members[1], "!feedback submit")
    assert "Write your feedback after the command" in empty["content"]
    # moderators only
    assert "E5002" in content_of(await slash(sim, world, user, "feedback", sub("list")))
    listing = content_of(await slash(sim, world, world.moderator, "feedback", sub("list")))
    assert "**#1** [open]" in listing and "**#2** [open]" in listing
    assert "@everyone" not in listing and "\\*\\*really\\*\\*" in listing
    # resolve: the sender gets a DM, resolving twice is refused
    resolved = await slash(sim, world, world.moderator, "feedback",
                           sub("resolve", options(id=1, note="Thanks, fixed!")))
    assert content_of(resolved) == "Feedback #1 is resolved."
    dm = await dm_channel(sim, user)

    async def got_dm() -> dict[str, Any] | None:
        return next((m for m in await channel_messages(sim, dm) if "feedback #1" in m["content"]), None)

    message = await wait_for(got_dm, timeout=15, message="the DM about feedback #1")
    assert "was resolved" in message["content"] and "Thanks, fixed!" in message["content"]
    again = await slash(sim, world, world.moderator, "feedback", sub("resolve", options(id=1)))
    assert "already resolved" in content_of(again)
    missing = await slash(sim, world, world.moderator, "feedback", sub("ack", options(id=999)))
    assert "no feedback #999" in content_of(missing) and "E5007" in content_of(missing)
    assert content_of(await slash(sim, world, world.moderator, "feedback", sub("ack", options(id=2)))) == \
        "Feedback #2 is acknowledged."


async def test_feedback_list_pages(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    bot = await command_bot()
    for i in range(12):
        user = world.members[i // 3]
        reply = await slash(sim, world, user, "feedback", sub("submit", options(text=f"idea number {i}")))
        assert "Thanks!" in content_of(reply)
    throttled = await slash(sim, world, world.members[0], "feedback", sub("submit", options(text="one more")))
    assert "E5003" in content_of(throttled) and "try again in" in content_of(throttled)
    listing = await slash(sim, world, world.moderator, "feedback", sub("list"))
    first = listing["callback"]["data"]
    assert "page 1/2" in first["content"] and "idea number 11" in first["content"]
    nav = buttons(first)
    assert nav["Previous"].get("disabled") is True
    # someone else cannot turn the pages
    other = await interact(sim, world, world.members[0], bot=bot, kind="component", custom_id=nav["Next"]["custom_id"],
                           message_id=listing["response_message_id"])
    assert "someone else's" in content_of(other)
    page2 = await interact(sim, world, world.moderator, bot=bot, kind="component", custom_id=nav["Next"]["custom_id"],
                           message_id=listing["response_message_id"])
    assert page2["callback"]["type"] == 7
    assert "page 2/2" in page2["callback"]["data"]["content"]
    assert "idea number 0" in page2["callback"]["data"]["content"]
