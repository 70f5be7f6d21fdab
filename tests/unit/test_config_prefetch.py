"""A READY payload starts a prefetch of the guild configurations it lists, before discord.py parses it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from shard.config_prefetch import ConfigPrefetch
from tests.support import wait_for


class _Store:
    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    async def prefetch(self, guild_ids: list[int]) -> int:
        self.asked.append(list(guild_ids))
        return len(guild_ids)


async def test_ready_payloads_start_prefetches_and_still_reach_discord_py() -> None:
    parsed: list[Any] = []
    bot = SimpleNamespace(_connection=SimpleNamespace(parsers={"READY": parsed.append}))
    store = _Store()
    prefetch = ConfigPrefetch(bot, store)  # type: ignore[arg-type]
    prefetch.install()
    ready = {"shard": [3, 8], "guilds": [{"id": "11", "unavailable": True}, {"id": "12", "unavailable": True}]}
    bot._connection.parsers["READY"](ready)
    assert parsed == [ready]  # discord.py still parses it, unchanged
    await wait_for(lambda: prefetch.prefetched == 2, message="the prefetch")
    assert store.asked == [[11, 12]]
    bot._connection.parsers["READY"]({"shard": [4, 8], "guilds": "not a list of guilds"})  # malformed: no prefetch
    bot._connection.parsers["READY"]({"shard": [5, 8], "guilds": []})
    await asyncio.sleep(0)
    assert store.asked == [[11, 12]] and len(parsed) == 3
    await prefetch.stop()
