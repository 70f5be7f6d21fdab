"""Core commands end to end: a real simulator, an in-process ClusterBot with PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from tests.e2e.commands import (
    CommandBotFactory,
    content_of,
    followups,
    is_ephemeral,
    load_world,
    options,
    prefix,
    slash,
)
from tests.procs import SimulatorProc

pytestmark = pytest.mark.e2e


async def test_ping_help_and_permissions(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    await command_bot(owners=(world.members[1],))
    user = world.members[0]
    pong = await slash(sim, world, user, "ping")
    assert content_of(pong).startswith("Pong!")
    reply = await prefix(sim, world, user, "!ping")
    assert reply["content"].startswith("Pong!")

    # /help lists what this user may run, and not what they may not
    help_user = await slash(sim, world, user, "help")
    assert is_ephemeral(help_user)
    text = content_of(help_user)
    assert "`/ping`" in text and "`/help [command]`" in text
    assert "/debug" not in text and "/metrics" not in text
    help_owner = content_of(await slash(sim, world, world.members[1], "help"))
    assert "/debug" in help_owner and "/metrics" in help_owner

    detail = content_of(await slash(sim, world, user, "help", options(command="ping")))
    assert "Usage: `/ping`" in detail and "Example:" in detail

    # /debug is owner-only: a guild owner (admin) is refused with a code, the bot owner gets internals
    denied = await slash(sim, world, world.owner, "debug")
    assert is_ephemeral(denied) and "E5002" in content_of(denied)
    internals = await slash(sim, world, world.members[1], "debug")
    assert is_ephemeral(internals) and "cluster 0" in content_of(internals)
    assert "eval" not in content_of(internals)

    # /metrics needs mod; the guild owner is admin
    metrics = await slash(sim, world, world.owner, "metrics")
    assert "commands in" in content_of(metrics)
    assert "E5002" in content_of(await slash(sim, world, user, "metrics"))


async def test_status_and_health(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    await command_bot()
    report = await slash(sim, world, world.members[0], "status")
    assert report["callback"]["type"] == 5  # deferred, then a follow-up
    (msg,) = await followups(sim, report)
    assert "cluster 0 (this one)" in msg["content"] and "shards 2/2 ready" in msg["content"]

    health = await slash(sim, world, world.members[0], "health")
    (msg,) = await followups(sim, health)
    assert msg["content"].startswith("**Healthy**"), msg["content"]
    assert "database: ok" in msg["content"] and "redis: ok" in msg["content"]

    reply = await prefix(sim, world, world.members[0], "!health")
    assert "database: ok" in reply["content"]


