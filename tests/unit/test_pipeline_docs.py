"""docs/commands.md is generated from the registry, and every command is a complete pipeline command."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import discord
from discord.ext import commands

from innkeeper.settings import PROJECT_ROOT
from shard.cogs import EXTENSIONS
from shard.docs import DOC_PATH, _ordered, load_commands, render
from shard.pipeline import spec_of


def test_docs_commands_md_is_up_to_date() -> None:
    expected = render(_ordered(asyncio.run(load_commands())))
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert current == expected, "docs/commands.md is stale: run `python -m shard.docs > docs/commands.md`"


def test_the_check_flag_reports_staleness() -> None:
    result = subprocess.run([sys.executable, "-m", "shard.docs", "--check"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_command_passes_through_the_pipeline_and_is_documented() -> None:
    async def load() -> commands.AutoShardedBot:
        bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none(), help_command=None)
        for name in EXTENSIONS:
            await bot.load_extension(name)
        return bot

    bot = asyncio.run(load())
    every = list(bot.walk_commands())
    assert len(every) >= 30
    assert [c.qualified_name for c in every if spec_of(c) is None] == []
    assert all(isinstance(c, commands.HybridCommand | commands.HybridGroup) for c in every)
    infos = asyncio.run(load_commands())
    assert [i.name for i in infos if not i.spec.examples] == []
    assert [i.name for i in infos if not i.description] == []
    # every example names the command it documents and only its arguments
    for info in infos:
        names = {a.name for a in info.arguments}
        for example in info.spec.examples:
            assert example.startswith(f"/{info.name}"), example
            used = {w.split(":", 1)[0] for w in example[len(info.name) + 1:].split() if ":" in w}
            assert used <= names | {"http", "https"}, (example, used - names)
    text = DOC_PATH.read_text(encoding="utf-8")
    for info in infos:
        assert f"### /{info.name}\n" in text


def test_prefix_examples_follow_parameter_order() -> None:
    infos = {i.name: i for i in asyncio.run(load_commands())}
    alias = infos["alias add"]
    example = alias.prefix_example("/alias add name:p scope:server command:ping now", "?")
    assert example == "?alias add p server ping now"
    assert infos["remind"].prefix_example("/remind when:10m text:tea", "!") == "!remind 10m tea"
    resolve = infos["feedback resolve"]
    assert resolve.prefix_example("/feedback resolve id:3 note:all good", "!") == "!feedback resolve 3 all good"
