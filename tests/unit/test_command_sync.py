"""Command sync: the tree's hash says when to sync; a failed sync is retried, never fatal."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

import discord
import pytest
from discord import app_commands
from redis.exceptions import ConnectionError as RedisConnectionError

from innkeeper.settings import PROJECT_ROOT
from shard.command_sync import SYNC_PENDING, SYNCS, CommandSync, command_payload, payload_hash
from tests.support import wait_for


def _tree(*, unit_choices: tuple[str, ...] = ("minutes", "hours"), describe: str = "how long",
          reverse: bool = False) -> app_commands.CommandTree[Any]:
    """A tree as an extension builds it: ``/ping`` and ``/remind when:int unit:choice``, in either order."""
    client = discord.Client(intents=discord.Intents.none())
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)

    async def ping(interaction: discord.Interaction[Any]) -> None: ...

    @app_commands.describe(when=describe)
    @app_commands.choices(unit=[app_commands.Choice(name=c, value=c) for c in unit_choices])
    async def remind(interaction: discord.Interaction[Any], when: int, unit: str) -> None: ...

    built = [app_commands.Command(name="ping", description="pong", callback=ping),
             app_commands.Command(name="remind", description="a reminder", callback=remind)]
    for command in reversed(built) if reverse else built:
        tree.add_command(command)
    return tree


async def _hash(tree: app_commands.CommandTree[Any], application_id: int | None = 1) -> str:
    return payload_hash(application_id, await command_payload(tree))


async def test_the_same_tree_has_the_same_hash_and_a_changed_option_another() -> None:
    same = await _hash(_tree())
    assert same == await _hash(_tree()) == await _hash(_tree(reverse=True))  # built again, in any order
    assert len(same) == 64
    assert await _hash(_tree(describe="when, in units")) != same  # an option's description
    assert await _hash(_tree(unit_choices=("minutes", "hours", "days"))) != same  # an option's choices
    assert await _hash(_tree(), application_id=2) != same  # another application


def test_the_bots_own_tree_hashes_the_same_in_another_process() -> None:
    """The real cogs' payload is stable JSON: no set or dict order leaks into it across processes."""
    script = ("import asyncio\n"
              "from shard.command_sync import command_payload, payload_hash\n"
              "import discord\nfrom discord.ext import commands\nfrom shard.cogs import EXTENSIONS\n"
              "async def main():\n"
              "    bot = commands.AutoShardedBot(command_prefix='!', intents=discord.Intents.none(),\n"
              "                                  help_command=None)\n"
              "    for name in EXTENSIONS:\n"
              "        await bot.load_extension(name)\n"
              "    print(payload_hash(1, await command_payload(bot.tree)))\n"
              "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}) for seed in ("1", "2")]  # side by side
    hashes = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0]
    assert len(hashes) == 1 and len(hashes.pop()) == 64


class Store:
    """A :class:`~ipc.synced_commands.SyncedCommands` in memory (Redis is tested end to end)."""

    def __init__(self, value: str | None = None, *, down: bool = False) -> None:
        self.value = value
        self.down = down

    async def load(self) -> str | None:
        if self.down:
            raise RedisConnectionError("Redis is down")
        return self.value

    async def save(self, digest: str) -> None:
        if self.down:
            raise RedisConnectionError("Redis is down")
        self.value = digest


class Syncing(app_commands.CommandTree[Any]):
    """A tree whose ``sync`` fails ``failures`` times (as a rejected bulk overwrite), then succeeds."""

    def __init__(self, client: discord.Client, failures: int = 0) -> None:
        super().__init__(client)
        self.failures = failures
        self.calls = 0

    async def sync(self, *, guild: discord.abc.Snowflake | None = None) -> list[app_commands.AppCommand]:
        self.calls += 1
        if self.calls <= self.failures:
            raise discord.HTTPException(_Response(400), {"message": "Invalid Form Body", "code": 50035})
        return []


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = "Bad Request"


def _syncing(failures: int = 0) -> Syncing:
    client = discord.Client(intents=discord.Intents.none())
    client._connection.application_id = 77
    tree = Syncing(client, failures)

    async def ping(interaction: discord.Interaction[Any]) -> None: ...

    tree.add_command(app_commands.Command(name="ping", description="pong", callback=ping))
    return tree


async def test_a_sync_happens_once_then_only_when_the_tree_changed() -> None:
    tree, store = _syncing(), Store()
    synced = SYNCS.labels("synced")._value.get()
    assert await CommandSync(tree, store).run() == "synced"  # type: ignore[arg-type]
    assert tree.calls == 1 and store.value == await _hash(tree, 77)
    assert await CommandSync(tree, store).run() == "unchanged"  # type: ignore[arg-type]  # a restart
    assert tree.calls == 1

    async def pong(interaction: discord.Interaction[Any]) -> None: ...

    tree.add_command(app_commands.Command(name="pong", description="ping", callback=pong))
    assert await CommandSync(tree, store).run() == "synced"  # type: ignore[arg-type]
    assert tree.calls == 2 and SYNCS.labels("synced")._value.get() == synced + 2


async def test_without_redis_the_tree_is_synced_anyway() -> None:
    tree = _syncing()
    assert await CommandSync(tree, Store("stale", down=True)).run() == "synced"  # type: ignore[arg-type]
    assert tree.calls == 1


async def test_a_failed_sync_is_logged_and_retried_in_the_background_with_backoff(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    tree, store = _syncing(failures=3), Store()
    sync = CommandSync(tree, store, retry_s=0.01)  # type: ignore[arg-type]
    delays: list[float] = []
    sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        delays.append(delay)
        await sleep(0)

    monkeypatch.setattr("shard.command_sync.asyncio.sleep", recorded)
    failed = SYNCS.labels("failed")._value.get()
    with caplog.at_level(logging.ERROR, logger="shard.command_sync"):
        await sync.start()  # returns at once: the cluster goes on starting
        assert sync.outcome is None
        assert await asyncio.wait_for(sync.wait(), timeout=5) == "synced"
    assert tree.calls == 4 and store.value is not None
    assert SYNCS.labels("failed")._value.get() == failed + 3 and SYNC_PENDING._value.get() == 0
    assert len(delays) == 3 and all(0.005 <= d <= 0.04 for d in delays) and delays[2] >= 0.02  # doubling ceilings
    lines = [r.getMessage() for r in caplog.records if r.name == "shard.command_sync"]
    assert len(lines) == 3 and all(line.startswith("[E2007] application command sync failed (HTTPException: 400")
                                   for line in lines)
    await sync.stop()


async def test_stopping_ends_the_retries() -> None:
    tree = _syncing(failures=10**6)
    sync = CommandSync(tree, Store(), retry_s=30)  # type: ignore[arg-type]
    await sync.start()
    await wait_for(lambda: tree.calls, timeout=5, message="the first attempt")
    assert SYNC_PENDING._value.get() == 1
    await asyncio.wait_for(sync.stop(), timeout=5)
    assert tree.calls == 1 and sync.outcome is None

