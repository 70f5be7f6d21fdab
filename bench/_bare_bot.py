"""Bare discord.py for ``bench.dispatch``: an ``AutoShardedBot`` with a ``!ping`` command, and a counter to read.

It changes nothing in discord.py but the two base URLs. ``on_message`` counts each message and hands
it to ``process_commands`` (what ``commands.Bot`` does by default), so the bot pays for command
parsing on every message, as ours does. A tiny HTTP endpoint in the same event loop answers
``GET /count`` with ``{"messages", "ready"}`` for the benchmark to poll.

With ``--members`` (and ``--presences``) it asks for those intents and keeps discord.py's default
caching for them: every member cached (``MemberCacheFlags.from_intents``) and every guild that needs it
chunked at start-up (``chunk_guilds_at_startup`` defaults to the members intent), as a bot that never
thought about memory does. ``/count`` then also says how many members are cached, and ``ready`` waits
for the chunking, as discord.py's READY does.

Usage: ``python bench/_bare_bot.py API_URL TOKEN COUNT_PORT [--members] [--presences]``
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import discord
import yarl
from aiohttp import web
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

__all__ = ("main",)


class BareBot(commands.AutoShardedBot):
    def __init__(self, port: int, *, members: bool = False, presences: bool = False) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = members
        intents.presences = presences
        super().__init__(command_prefix="!", intents=intents, help_command=None)
        self.messages = 0
        self.port = port
        self.runner: web.AppRunner | None = None

    async def setup_hook(self) -> None:
        app = web.Application()
        app.router.add_get("/count", self._count)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        @commands.command(name="ping")
        async def ping(ctx: commands.Context[Any]) -> None:
            await ctx.send("Pong!")

        self.add_command(ping)

    async def _count(self, request: web.Request) -> web.Response:
        return web.json_response({"messages": self.messages, "ready": self.is_ready(), "guilds": len(self.guilds),
                                  "members_cached": sum(len(g.members) for g in self.guilds),
                                  "chunked": sum(1 for g in self.guilds if g.chunked)})

    async def on_message(self, message: discord.Message) -> None:
        self.messages += 1
        await self.process_commands(message)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # discord.py's run() closes cleanly on it (and a profiler gets to write)


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    api_url, token, port = sys.argv[1:4]
    flags = set(sys.argv[4:])
    Route.BASE = f"{api_url}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(api_url.replace("http", "ws", 1) + "/gateway")
    BareBot(int(port), members="--members" in flags, presences="--presences" in flags).run(token, log_handler=None)


if __name__ == "__main__":
    main()
