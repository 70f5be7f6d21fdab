"""Aliases end to end: created by slash or prefix, expanded for prefix commands, rules enforced."""

from __future__ import annotations

import pytest

from shard.pipeline.context import DM_POINTER
from tests.e2e.commands import (
    CommandBotFactory,
    content_of,
    dm_with,
    is_ephemeral,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.procs import SimulatorProc

pytestmark = pytest.mark.e2e


async def test_aliases(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    await command_bot()
    user, other = world.members[0], world.members[1]
    made = await slash(sim, world, user, "alias", sub("add", options(name="p", command="ping")))
    assert is_ephemeral(made) and "Alias `p` → `ping` created for you" in content_of(made)
    assert (await prefix(sim, world, user, "!p"))["content"].startswith("Pong!")
    # a server alias by a moderator, with arguments appended at use
    server = await prefix(sim, world, world.moderator, "!alias add h server help")
    assert "created for everyone here" in server["content"]
    detail = await prefix(sim, world, other, "!h ping")  # help's answer is private: it comes by DM
    assert detail["content"] == DM_POINTER
    await dm_with(sim, other, "Usage: `/ping`")
    # a chain: personal "hp" → server "h status" (help for another command, to tell the answers apart)
    assert "created for you" in content_of(await slash(sim, world, other, "alias",
                                                       sub("add", options(name="hp", command="h status"))))
    assert (await prefix(sim, world, other, "!hp"))["content"] == DM_POINTER
    await dm_with(sim, other, "Usage: `/status`")
    # refused: shadowing, cycles, unknown targets, over-long, server scope without mod
    shadow = await slash(sim, world, user, "alias", sub("add", options(name="ping", command="help")))
    assert "cannot shadow" in content_of(shadow) and "E5001" in content_of(shadow)
    unknown = await slash(sim, world, user, "alias", sub("add", options(name="a2", command="a3")))
    assert "not a command" in content_of(unknown)
    again = await prefix(sim, world, user, "!alias add p help")
    assert "already exists" in again["content"]
    self_loop = await prefix(sim, world, user, "!alias add me me")
    assert "loops" in self_loop["content"]
    await slash(sim, world, user, "alias", sub("add", options(name="x1", command="help")))
    loop2 = await slash(sim, world, user, "alias", sub("add", options(name="x2", command="x1")))
    assert "created" in content_of(loop2)
    await slash(sim, world, user, "alias", sub("remove", options(name="x1")))
    looping = await slash(sim, world, user, "alias", sub("add", options(name="x1", command="x2")))
    assert "loops" in content_of(looping)
    long = await slash(sim, world, user, "alias", sub("add", options(name="l", command="ping " + "z" * 500)))
    assert "at most 400 characters" in content_of(long)
    no_mod = await slash(sim, world, user, "alias", sub("add", options(name="s", command="ping", scope="server")))
    assert "need the mod level" in content_of(no_mod) and "E5002" in content_of(no_mod)
    listing = content_of(await slash(sim, world, other, "alias", sub("list")))
    assert "`hp` → `h status`" in listing and "`h` → `help`" in listing
    # the aliases feature can be turned off by an admin: expansion and the commands stop
    await slash(sim, world, world.owner, "settings", sub("set", options(key="feature.aliases", value="off")))
    off = await slash(sim, world, user, "alias", sub("list"))
    assert "E5004" in content_of(off)
    assert (await prefix(sim, world, user, "!ping"))["content"].startswith("Pong!")
