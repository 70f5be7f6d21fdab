"""The naive way, for bench.cold_start: a plain ``AutoShardedBot`` with discord.py's own identify pacing.

It changes nothing but the two base URLs, and prints one line per IDENTIFY and per READY with the
Unix time, so the benchmark can time it. Usage: ``python bench/_naive_bot.py API_URL TOKEN FIRST-LAST COUNT``.
"""

from __future__ import annotations

import sys
import time

import discord
import yarl
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

__all__ = ("main",)


class NaiveBot(commands.AutoShardedBot):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        await super().before_identify_hook(shard_id, initial=initial)  # discord.py: 5 s unless initial
        print(f"IDENTIFY {shard_id} {time.time():.4f}", flush=True)

    async def on_shard_connect(self, shard_id: int) -> None:
        print(f"READY {shard_id} {time.time():.4f}", flush=True)


def main() -> None:
    api_url, token, span, count = sys.argv[1:5]
    first, last = (int(x) for x in span.split("-"))
    Route.BASE = f"{api_url}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(api_url.replace("http", "ws", 1) + "/gateway")
    bot = NaiveBot(command_prefix="!", intents=discord.Intents.default(), shard_ids=list(range(first, last + 1)),
                   shard_count=int(count), chunk_guilds_at_startup=False)
    bot.run(token, log_handler=None)


if __name__ == "__main__":
    main()
