"""Admission end to end: with every place taken, a slash command waits deferred, the next is shed kindly.

A real simulator and an in-process ClusterBot (PostgreSQL, Redis). The test takes the cluster's only
place itself (``Admission.enter``), so what waits and what is shed does not depend on timing.
"""

from __future__ import annotations

import asyncio

import pytest

from shard.early_shed import EarlyShed
from shard.pipeline.admission import Admission
from tests.e2e.commands import CommandBotFactory, content_of, followups, is_ephemeral, load_world, prefix, slash
from tests.procs import SimulatorProc
from tests.support import wait_for

pytestmark = pytest.mark.e2e


async def test_waiting_commands_are_deferred_and_a_full_queue_is_shed(sim: SimulatorProc,
                                                                      command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bot = await command_bot()
    admission = Admission(max_running=1, max_queued=1, defer_after=0.2, max_wait=30.0)
    bot.pipeline.admission = admission
    await admission.enter()  # the one place is taken

    waiting = asyncio.ensure_future(slash(sim, world, world.members[0], "ping", timeout=20))
    await wait_for(lambda: admission.queued == 1, timeout=10, message="/ping queued")
    early_shed = next(s for s in bot._services.services if isinstance(s, EarlyShed))
    early = early_shed.shed
    shed = await slash(sim, world, world.members[1], "ping")  # the queue is full: told at once
    assert is_ephemeral(shed)
    assert "busy" in content_of(shed) and "E5008" in content_of(shed)
    assert early_shed.shed == early + 1  # answered from the raw payload, before discord.py parsed it

    # a prefix command finds the queue full too: a plain reply, same code
    told = await prefix(sim, world, world.members[2], "!ping")
    assert "E5008" in told["content"]

    # the waiting /ping is deferred (Discord shows "thinking…"), then answered once the place frees
    await wait_for(lambda: admission.deferred == 1, timeout=10, message="the waiting /ping deferred")
    admission.leave()
    report = await asyncio.wait_for(waiting, 20)
    assert report["callback"]["type"] == 5  # the deferral was the interaction's response
    answer = await followups(sim, report)
    assert answer[0]["content"].startswith("Pong!")
    assert admission.snapshot() == {"running": 0, "queued": 0, "max_running": 1, "max_queued": 1,
                                    "deferred": 1, "shed": 2}

    # with places free again, a command runs as before
    assert content_of(await slash(sim, world, world.members[3], "ping")).startswith("Pong!")
