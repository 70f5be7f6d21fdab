"""An unmodified discord.py AutoShardedBot, changed only in the two base URLs.

Used by the e2e tests to prove that (a) plain discord.py connects to the simulator and (b)
processes that do not coordinate their identifies trip the simulator's concurrency check.

Usage: ``python tests/e2e/naive_bot.py API_URL TOKEN SHARD_IDS SHARD_COUNT``
"""

from __future__ import annotations

import sys

import discord
import yarl
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.http import Route


def main() -> None:
    api_url, token, shard_ids, shard_count = sys.argv[1:5]
    Route.BASE = f"{api_url}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(api_url.replace("http", "ws", 1) + "/gateway")
    intents = discord.Intents.default()
    bot = commands.AutoShardedBot(
        command_prefix="!", intents=intents, shard_ids=[int(s) for s in shard_ids.split(",")],
        shard_count=int(shard_count),
    )

    @bot.event
    async def on_ready() -> None:
        print(f"READY guilds={len(bot.guilds)}", flush=True)

    bot.run(token, log_handler=None)


if __name__ == "__main__":
    main()
