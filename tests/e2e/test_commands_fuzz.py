"""hypothesis over argument strings, through the real gateway: a clear answer every time, no crash, nothing lost."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.commands import (
    CommandBotFactory,
    World,
    answer_text,
    content_of,
    load_world,
    options,
    reply_to,
    slash,
    sub,
)
from tests.procs import SimulatorProc, bot_api, http_json
from tests.support import wait_for

pytestmark = pytest.mark.e2e

_CODE = re.compile(r"\((E\d{4})\)")
#: What a user may legitimately see for junk input: argument errors, not-found, conflicts.
_USER_CODES = {"E5001", "E5007", "E4003", "E5006"}

# text Discord can carry: anything but lone surrogates (JSON cannot encode them); NUL and controls included
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)


def verdict(text: str) -> str:
    codes = set(_CODE.findall(text))
    assert codes <= _USER_CODES, text
    assert text.strip(), "an empty answer"
    return text


@pytest.fixture
async def fuzz_bot(sim: SimulatorProc, command_bot: CommandBotFactory) -> tuple[SimulatorProc, World, str]:
    world = await load_world(sim)
    owner = world.members[-1]  # owners are not throttled: every example reaches the validate stage
    await command_bot(owners=(owner,))
    return sim, world, owner


async def test_arbitrary_arguments(fuzz_bot: tuple[SimulatorProc, World, str]) -> None:
    sim, world, owner = fuzz_bot
    before = sim.stats()["acknowledged"]
    sent = 0

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(when=TEXT, text=TEXT, name=TEXT, line=TEXT, prefix=TEXT)
    def run(when: str, text: str, name: str, line: str, prefix: str) -> None:
        nonlocal sent

        async def one() -> None:
            nonlocal sent
            cases: list[tuple[str, list[dict[str, Any]]]] = [
                ("remind", options(when=when, text=text)),
                ("alias", sub("add", options(name=name, command=line))),
                ("settings", sub("set", options(key="prefix", value=prefix))),
                ("help", options(command=name)),
                ("feedback", sub("resolve", options(id=7, note=text))),
            ]
            for command, opts in cases:
                report = await slash(sim, world, owner, command, opts)
                sent += 1
                verdict(await answer_text(sim, report))
            # the prefix path, through the mention prefix (the guild prefix may have changed above)
            status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
                "guild_id": world.guild_id, "channel_id": world.channel_id, "author_id": owner,
                "content": f"<@{world_bot_id}> remind {when[:60]} {text}"})
            assert status == 200, posted
            reply = await wait_for(lambda: reply_to(sim, world.channel_id, str(posted["id"])), timeout=15,
                                   message="a reply to the fuzzed prefix command")
            verdict(reply["content"])

        asyncio.run_coroutine_threadsafe(one(), loop).result(timeout=90)

    loop = asyncio.get_running_loop()
    world_bot_id = await bot_id(sim)
    await asyncio.to_thread(run)
    # nothing lost: every interaction was acknowledged, and the bot still answers
    assert sim.stats()["acknowledged"] - before >= sent
    assert content_of(await slash(sim, world, owner, "ping")).startswith("Pong!")


async def bot_id(sim: SimulatorProc) -> str:
    status, me = await asyncio.to_thread(bot_api, sim, "GET", "/api/v10/users/@me")
    assert status == 200, me
    return str(me["id"])
