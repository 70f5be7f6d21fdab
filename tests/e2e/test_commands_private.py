"""Answers meant for one user stay private on the prefix path: by DM, with only a pointer in the channel."""

from __future__ import annotations

import asyncio

import pytest

from shard.pipeline.context import DM_POINTER
from tests.e2e.commands import (
    CommandBotFactory,
    channel_messages,
    content_of,
    dm_channel,
    dm_with,
    is_ephemeral,
    load_world,
    prefix,
    slash,
    sub,
)
from tests.procs import SimulatorProc, http_json

pytestmark = pytest.mark.e2e


async def test_private_answers_go_by_dm_and_never_into_the_channel(sim: SimulatorProc,
                                                                   command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    await command_bot()
    # the slash form is ephemeral; the prefix form answers by DM and points there
    shown = await slash(sim, world, world.owner, "settings", sub("show"))
    assert is_ephemeral(shown) and "prefix:" in content_of(shown)
    pointer = await prefix(sim, world, world.owner, "!settings show")
    assert pointer["content"] == DM_POINTER
    settings = await dm_with(sim, world.owner, "prefix:")
    assert "Settings of" in settings["content"]
    channel = await channel_messages(sim, world.channel_id)
    assert not any("prefix:" in m["content"] for m in channel if m["author"].get("bot"))
    # public answers stay public
    assert (await prefix(sim, world, world.members[0], "!ping"))["content"].startswith("Pong!")
    # DMs closed: the channel gets a pointer to the slash form, never the answer
    dm = await dm_channel(sim, world.moderator)
    status, fault = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/faults", {
        "kind": "http_error", "route": f"POST /channels/{dm}/messages", "status": 403, "count": 1})
    assert status == 200, fault
    closed = await prefix(sim, world, world.moderator, "!permissions list")
    assert "couldn't DM you" in closed["content"] and "`/permissions list`" in closed["content"]
    assert "Your level here" not in closed["content"]
    later = await channel_messages(sim, world.channel_id)
    assert not any("Your level here" in m["content"] for m in later)
