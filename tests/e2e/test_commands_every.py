"""Every documented example of every command, through both paths, as the bot owner and as a member.

Nothing may answer with an internal error (E9999) and nothing may go unanswered: a slash command
always gets a callback, a prefix command always gets a reply.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from discord import AppCommandOptionType

from shard.docs import load_commands
from shard.pipeline.registry import CommandInfo
from tests.e2e.conftest import BotFactory
from tests.e2e.test_commands_harness import (
    World,
    content_of,
    followups,
    load_world,
    prefix,
    slash,
    start_command_bot,
)
from tests.procs import SimulatorProc

pytestmark = pytest.mark.e2e

_CODE = re.compile(r"\((E\d{4})\)")
_ALLOWED_CODES = {"E5001", "E5002", "E5003", "E5004", "E5006", "E5007", "E4003"}


def example_values(info: CommandInfo, example: str) -> dict[str, str]:
    names = {a.name for a in info.arguments}
    values: dict[str, list[str]] = {}
    current = None
    for word in example[len(info.name) + 1:].split():
        key, sep, value = word.partition(":")
        if sep and key in names:
            current = key
            values[current] = [value] if value else []
        elif current is not None:
            values[current].append(word)
    return {k: " ".join(v) for k, v in values.items()}


def slash_options(info: CommandInfo, values: dict[str, str], world: World) -> tuple[str, list[dict[str, Any]]]:
    app = info.command.app_command  # type: ignore[attr-defined]
    types = {p.name: p.type for p in app.parameters}
    opts: list[dict[str, Any]] = []
    for name, value in values.items():
        kind = types[name]
        if kind is AppCommandOptionType.integer:
            opts.append({"name": name, "type": 4, "value": int(value)})
        elif kind is AppCommandOptionType.role:
            opts.append({"name": name, "type": 8, "value": world.member_role})
        else:
            opts.append({"name": name, "type": 3, "value": value})
    parts = info.name.split()
    for sub in reversed(parts[1:]):
        opts = [{"name": sub, "type": 1, "options": opts}]
    return parts[0], opts


async def answer_text(sim: SimulatorProc, report: dict[str, Any]) -> str:
    callback = report["callback"]
    if callback["type"] == 5:
        return str((await followups(sim, report))[0].get("content") or "")
    if callback["type"] == 9:
        return "(a modal)"
    return content_of(report)


def check(text: str, where: str) -> None:
    codes = set(_CODE.findall(text))
    assert codes <= _ALLOWED_CODES, f"{where}: {text}"


async def test_every_example_both_paths(sim: SimulatorProc, migrated_db: str, start_bot: BotFactory) -> None:
    world = await load_world(sim)
    owner = world.members[-1]
    bot = await start_command_bot(start_bot, sim, migrated_db, owners=(owner,))
    assert bot.user is not None
    mention = f"<@{bot.user.id}> "
    infos = await load_commands()
    ran = 0
    for info in infos:
        for example in info.spec.examples:
            values = example_values(info, example)
            name, opts = slash_options(info, values, world)
            as_member = await slash(sim, world, world.members[0], name, opts)
            check(await answer_text(sim, as_member), f"{example} (member)")
            as_owner = await slash(sim, world, owner, name, opts)
            check(await answer_text(sim, as_owner), f"{example} (owner)")
            line = info.prefix_example(example, mention).replace("@Helpers", f"<@&{world.member_role}>")
            reply = await prefix(sim, world, owner, line)
            check(reply["content"], line)
            ran += 1
    assert ran >= 40
