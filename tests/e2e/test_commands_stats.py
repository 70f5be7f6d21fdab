"""Usage statistics end to end: every command use is recorded once; large results are paginated."""

from __future__ import annotations

import pytest

from tests.e2e.commands import (
    CommandBotFactory,
    content_of,
    followups,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.e2e.test_commands_feedback import buttons, interact
from tests.procs import SimulatorProc

pytestmark = pytest.mark.e2e


async def test_stats(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    await command_bot()
    for _ in range(3):
        await slash(sim, world, world.members[0], "ping")
    await prefix(sim, world, world.members[1], "!ping")
    await slash(sim, world, world.members[0], "settings", sub("set", options(key="automod", value="low")))  # refused
    report = await slash(sim, world, world.moderator, "stats", sub("commands"))
    (page,) = await followups(sim, report)
    assert "`/ping` 4 use(s)" in page["content"]
    assert "`/settings set` 1 use(s), 1 failed" in page["content"]
    daily = await slash(sim, world, world.moderator, "stats", sub("daily", options(command="ping")))
    (page,) = await followups(sim, daily)
    assert "/ping, last 14 day(s)" in page["content"] and ": 4 use(s)" in page["content"]
    assert "E5002" in content_of(await slash(sim, world, world.members[0], "stats", sub("commands")))


async def test_stats_pages(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    assert world.moderator is not None
    bot = await command_bot()
    # 40 distinct command names' worth of history, written through the recorder (the same path as live use)
    for i in range(40):
        bot.deps.usage.record(user_id=int(world.members[0]), command=f"cmd{i:02d}",
                                         guild_id=int(world.guild_id), success=True, latency_ms=1.0)
    report = await slash(sim, world, world.moderator, "stats", sub("commands"))
    (first,) = await followups(sim, report)
    assert "page 1/3" in first["content"]
    nav = buttons(first)
    clicked = await interact(sim, world, world.moderator, bot=bot, kind="component", custom_id=nav["Next"]["custom_id"],
                             message_id=first["message_id"])
    assert clicked["callback"]["type"] == 7 and "page 2/3" in clicked["callback"]["data"]["content"]
