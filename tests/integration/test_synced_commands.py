"""The synced commands' hash in a real Redis: a restart with the same tree does not sync, a changed one does."""

from __future__ import annotations

from typing import Any

import discord
import pytest
import redis.asyncio as aioredis
from discord import app_commands

from ipc.keys import Keys
from ipc.synced_commands import SyncedCommands
from shard.command_sync import CommandSync, command_payload, payload_hash

pytestmark = pytest.mark.integration


class CountingTree(app_commands.CommandTree[Any]):
    """A tree whose ``sync`` only counts (Discord's side is tested end to end)."""

    def __init__(self, client: discord.Client) -> None:
        super().__init__(client)
        self.syncs = 0

    async def sync(self, *, guild: discord.abc.Snowflake | None = None) -> list[app_commands.AppCommand]:
        self.syncs += 1
        return []


def _tree(*names: str) -> CountingTree:
    client = discord.Client(intents=discord.Intents.none())
    client._connection.application_id = 42
    tree = CountingTree(client)

    async def callback(interaction: discord.Interaction[Any]) -> None: ...

    for name in names:
        tree.add_command(app_commands.Command(name=name, description=f"the {name} command", callback=callback))
    return tree


async def test_only_a_changed_tree_is_synced_across_restarts(redis: aioredis.Redis, redis_prefix: str) -> None:
    store = SyncedCommands(redis, Keys(redis_prefix))
    assert await store.load() is None
    first = _tree("ping", "remind")
    assert await CommandSync(first, store).run() == "synced" and first.syncs == 1
    assert await store.load() == payload_hash(42, await command_payload(first))
    assert await redis.ttl(Keys(redis_prefix).commands_synced()) == -1  # kept: Discord's commands do not expire
    restarted = _tree("remind", "ping")  # a new process, the extensions loaded in another order
    assert await CommandSync(restarted, store).run() == "unchanged" and restarted.syncs == 0
    changed = _tree("ping", "remind", "stats")
    assert await CommandSync(changed, store).run() == "synced" and changed.syncs == 1
    await store.forget()  # what `redis-cli DEL <prefix>:commands:synced` does: the next start syncs
    again = _tree("ping", "remind", "stats")
    assert await CommandSync(again, store).run() == "synced" and again.syncs == 1
