"""An unmodified discord.py AutoShardedBot, changed only in the two base URLs.

Used by the e2e tests to prove that (a) plain discord.py connects to the simulator and (b)
processes that do not coordinate their identifies trip the simulator's concurrency check.

Usage: ``python tests/e2e/naive_bot.py [--no-zstd] [--members] [--reply] API_URL TOKEN SHARD_IDS SHARD_COUNT``

discord.py picks its gateway compression once, when ``discord.utils`` is imported: ``zstd-stream``
when a zstd package (``zstandard``, or ``compression.zstd`` on Python 3.14) is importable, else
``zlib-stream``. ``--no-zstd`` hides those modules before discord is imported, so the same bot runs
with zlib-stream. The READY line names the codec the bot asked for.

``--members`` turns the members intent on, as a bot that keeps every member does: discord.py then
chunks every guild at start-up (``chunk_guilds_at_startup`` follows the intent). Once every guild
is chunked the bot prints one ``GUILD id=… members=… member_count=…`` line per guild, then
``ALL-CHUNKED``; discord.py's READY may come first if a huge guild's chunks outlast its timeout.

``--reply`` answers every message of a human with a message in its channel, as the simplest bot
does: stock discord.py all the way (its own rate limiting and 429 retries, its default ``on_error``).
The ban test storms those sends with 429s.
"""

from __future__ import annotations

import sys

#: The zstd modules discord.py tries; a ``None`` in ``sys.modules`` makes their import fail.
_ZSTD_MODULES = ("zstandard", "compression.zstd")
_FLAGS = ("--no-zstd", "--members", "--reply")


def main(argv: list[str]) -> None:
    no_zstd = "--no-zstd" in argv
    members = "--members" in argv
    reply = "--reply" in argv
    api_url, token, shard_ids, shard_count = [a for a in argv if a not in _FLAGS][:4]
    if no_zstd:
        for name in _ZSTD_MODULES:
            sys.modules[name] = None  # type: ignore[assignment]

    import asyncio

    import discord
    import yarl
    from discord.ext import commands
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    compress = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
    Route.BASE = f"{api_url}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(api_url.replace("http", "ws", 1) + "/gateway")
    intents = discord.Intents.default()
    intents.members = members
    bot = commands.AutoShardedBot(
        command_prefix="!", intents=intents, shard_ids=[int(s) for s in shard_ids.split(",")],
        shard_count=int(shard_count),
    )

    async def report_when_chunked() -> None:
        while not all(g.chunked for g in bot.guilds):  # noqa: ASYNC110 - discord.py has no "chunked" event to wait on
            await asyncio.sleep(0.2)
        for g in bot.guilds:
            print(f"GUILD id={g.id} members={len(g.members)} member_count={g.member_count}", flush=True)
        print("ALL-CHUNKED", flush=True)

    @bot.event
    async def on_ready() -> None:
        print(f"READY guilds={len(bot.guilds)} compress={compress}", flush=True)
        if members:
            bot.loop.create_task(report_when_chunked())

    if reply:
        @bot.event
        async def on_message(message: discord.Message) -> None:
            if not message.author.bot:
                await message.channel.send("pong")

    bot.run(token, log_handler=None)


if __name__ == "__main__":
    main(sys.argv[1:])
