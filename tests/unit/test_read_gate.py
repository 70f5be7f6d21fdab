"""The read gate: gateway reads wait while pending work is at its bound, and never for long."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from hypothesis import given, settings
from hypothesis import strategies as st

from shard.read_gate import Bounded, ReadGate


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=0, max_value=20), moves=st.lists(st.integers(min_value=-5, max_value=5),
                                                                     max_size=80))
def test_a_bounded_counter_is_full_at_its_limit_and_has_room_again_at_half(limit: int, moves: list[int]) -> None:
    async def run() -> None:
        counter = Bounded("work", limit)
        blocked = False  # the model: reached the limit and not yet back down to half
        for move in moves:
            if move > 0:
                counter.add(move)
            elif move < 0:
                counter.remove(min(-move, counter.count))
            if limit > 0 and counter.count >= limit:
                blocked = True
            elif counter.count <= limit // 2:
                blocked = False
            assert counter.full == (limit > 0 and counter.count >= limit)
            assert counter._room.is_set() == (not blocked)
            waiter = asyncio.ensure_future(counter.wait_room())
            await asyncio.sleep(0)
            assert waiter.done() == (not counter.full)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)

    asyncio.run(run())


async def test_reads_wait_while_a_watched_counter_is_full_until_it_drains_to_half() -> None:
    gate = ReadGate(max_pause_s=30, event_tasks=0)
    work = Bounded("work", 4)
    gate.watch(work)
    await gate.room()  # nothing is full: no wait
    work.add(4)
    assert gate.full
    waiting = asyncio.create_task(gate.room())
    await asyncio.sleep(0)
    work.remove(1)  # 3: not full, but not down to half either
    await asyncio.sleep(0)
    assert not waiting.done()
    work.remove(1)  # 2: half
    await asyncio.wait_for(waiting, timeout=5)


async def test_a_read_waits_at_most_max_pause_s_and_never_once_stopped() -> None:
    gate = ReadGate(max_pause_s=0.05, event_tasks=0)
    work = Bounded("work", 1)
    gate.watch(work)
    work.add()
    await asyncio.wait_for(gate.room(), timeout=5)  # nothing drains it; the pause ends
    assert gate.full
    await gate.stop()
    assert not gate.full
    await asyncio.wait_for(gate.room(), timeout=0.01)


async def test_the_gate_counts_discord_py_event_tasks_until_they_finish() -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none(), help_command=None)
    gate = ReadGate(event_tasks=2)
    gate.install(bot)
    release = asyncio.Event()
    seen: list[Any] = []

    async def on_thing(value: Any) -> None:
        seen.append(value)
        await release.wait()

    bot.add_listener(on_thing)
    async with bot:  # discord.py's loop is set up here
        bot.dispatch("thing", 1)
        bot.dispatch("thing", 2)
        assert gate.event_tasks.count == 2 and gate.full
        release.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert seen == [1, 2] and gate.event_tasks.count == 0 and not gate.full


def test_the_read_pause_wraps_discord_py_once() -> None:
    for _ in range(2):
        ReadGate().install(commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none()))
    wrapped = DiscordWebSocket.received_message
    assert getattr(wrapped, "_innkeeper_read_gate", False)
    inner = [c.cell_contents for c in wrapped.__closure__ or () if callable(c.cell_contents)]
    assert inner and not any(getattr(f, "_innkeeper_read_gate", False) for f in inner)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Bounded("work", -1)
    with pytest.raises(ValueError):
        ReadGate(max_pause_s=-1)
