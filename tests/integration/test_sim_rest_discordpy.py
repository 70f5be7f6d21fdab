"""Unmodified discord.py against the simulator's REST side: 429s ridden out, slash commands, deferrals,
follow-ups, files, buttons, modals and DMs, all through discord.py's own HTTP and webhook code.

Only ``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` are patched (for the test only).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from discord.http import HTTPClient, handle_message_parameters

from simulator.config import SimConfig
from simulator.server import SimulatorServer
from tests.support import view_listening, wait_for

pytestmark = pytest.mark.integration

TOKEN = "dpy-rest-token"


class Harness:
    def __init__(self, sim: SimulatorServer, bot: commands.Bot, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.bot = bot
        self.http = http
        self.errors: list[BaseException] = []

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.sim.url}/_sim/{path}", json=body) as resp:
            return resp.status, await resp.json()

    async def interact(self, **body: Any) -> dict[str, Any]:
        if body.get("kind") in ("component", "modal_submit"):  # a click: once the bot listens for it
            custom_id = str(body["custom_id"])
            await wait_for(lambda: view_listening(self.bot, custom_id), message=f"the bot to listen for {custom_id}")
        guild = self.sim.state.world.guilds[0]
        full = {"guild_id": str(guild.id), "channel_id": str(guild.channels[0].id),
                "user_id": str(guild.member_ids[0]), "timeout": 15, **body}
        status, reply = await self.control("POST", "interactions", full)
        assert status == 200, (reply, self.errors)
        return reply  # type: ignore[no-any-return]


def _build_bot(harness_errors: list[BaseException], guild_id: int) -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.Bot(command_prefix="!", intents=intents)
    where = discord.Object(guild_id)

    @bot.tree.command(name="ping", description="Ping", guild=where)
    async def ping(interaction: discord.Interaction) -> None:
        shard = interaction.guild.shard_id if interaction.guild else None
        await interaction.response.send_message(f"pong from shard {shard}")

    @bot.tree.command(name="slow", description="Defers, then follows up", guild=where)
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("slow answer")
        original = await interaction.original_response()
        await interaction.edit_original_response(content=original.content + " (edited)")
        await interaction.followup.send("and one more", ephemeral=True)

    @bot.tree.command(name="export", description="Sends a file", guild=where)
    async def export(interaction: discord.Interaction) -> None:
        blob = json.dumps({"user": interaction.user.id, "rows": list(range(100))}).encode()
        await interaction.response.send_message("your data", file=discord.File(io.BytesIO(blob), "export.json"),
                                                ephemeral=True)

    class Confirm(discord.ui.View):
        @discord.ui.button(label="Confirm", custom_id="confirm", style=discord.ButtonStyle.green)
        async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[Confirm]) -> None:
            await interaction.response.edit_message(content=f"confirmed by {interaction.user.id}", view=None)

    @bot.tree.command(name="confirm", description="A button", guild=where)
    async def confirm(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("sure?", view=Confirm(timeout=60))

    class Feedback(discord.ui.Modal, title="Feedback"):
        text: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="Your feedback", custom_id="text")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message("thanks!", ephemeral=True)
            await interaction.user.send(f"We got your feedback: {self.text.value}")

    @bot.tree.command(name="feedback", description="A modal", guild=where)
    async def feedback(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Feedback())

    @bot.tree.command(name="echo", description="Options", guild=where)
    @app_commands.describe(text="what", who="whom")
    async def echo(interaction: discord.Interaction, text: str, who: discord.Member) -> None:
        await interaction.response.send_message(f"{text} for {who.display_name} ({who.id})")

    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        harness_errors.append(error)

    bot.tree.on_error = on_error  # type: ignore[method-assign]
    return bot


@contextlib.asynccontextmanager
async def running(monkeypatch: pytest.MonkeyPatch, **config: Any) -> AsyncIterator[Harness]:
    cfg = SimConfig(port=0, guilds=4, guild_sizes="fixed", members_per_guild=6, token=TOKEN, identify_window=0.2,
                    **config)
    async with SimulatorServer(cfg) as sim:
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sim.url}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.gateway_url))
        errors: list[BaseException] = []
        bot = _build_bot(errors, sim.state.world.guilds[0].id)
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception") or RuntimeError(ctx)))
        task = asyncio.create_task(bot.start(TOKEN))
        async with aiohttp.ClientSession() as http:
            harness = Harness(sim, bot, http)
            harness.errors = errors
            try:
                def ready() -> bool:
                    if task.done():
                        task.result()
                    return bot.is_ready()

                await wait_for(ready, timeout=60, message="the bot to be READY")
                yield harness
                assert not task.done(), "the client stopped"
            finally:
                await bot.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=10)
                loop.set_exception_handler(previous)
        await wait_for(lambda: not sim.state.gateway.live_shards(), message="the bot's sockets to close")


async def test_bursts_past_the_message_bucket_are_ridden_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch, message_window=1.0, global_rate=1000) as h:
        world = h.sim.state.world
        channel = h.bot.get_channel(world.guilds[0].channels[0].id)
        assert isinstance(channel, discord.TextChannel)
        # A second discord.py HTTP client (another "process") shares the channel's 5-per-window bucket.
        other = HTTPClient(asyncio.get_running_loop())
        await other.static_login(TOKEN)
        try:
            async def send_other(i: int) -> str:
                with handle_message_parameters(content=f"other {i}") as params:
                    return str((await other.send_message(channel.id, params=params))["content"])

            sent = await asyncio.gather(*(channel.send(f"bot {i}") for i in range(8)),
                                        *(send_other(i) for i in range(8)))
        finally:
            await other.close()
        contents = [m.content if isinstance(m, discord.Message) else m for m in sent]
        assert contents == [f"bot {i}" for i in range(8)] + [f"other {i}" for i in range(8)]
        stored = h.sim.state.messages.list(channel.id, limit=100)
        assert sorted(m["content"] for m in stored) == sorted(contents)
        stats = h.sim.state.stats
        assert stats.rate_limited["user"] > 0
        assert stats.messages_created == 16
        # the bot saw its own messages echoed on the gateway
        await wait_for(lambda: sum(1 for m in h.bot.cached_messages if m.channel.id == channel.id) >= 16,
                       message="the echoes of every message")
        assert not h.errors


async def test_faults_shared_429_and_5xx_are_retried_by_discord_py(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as h:
        channel = h.bot.get_channel(h.sim.state.world.guilds[1].channels[0].id)
        assert isinstance(channel, discord.TextChannel)
        status, _ = await h.control("POST", "faults", {"kind": "http_error", "status": 429, "scope": "shared",
                                                       "retry_after": 0.2, "route": "/messages"})
        assert status == 200
        await h.control("POST", "faults", {"kind": "http_error", "status": 502, "route": "/messages"})
        message = await channel.send("after faults")
        assert message.content == "after faults"
        stats = h.sim.state.stats
        assert stats.rate_limited["shared"] == 1 and stats.invalid_requests == 0
        assert h.sim.state.rest_faults == []
        await h.control("POST", "faults", {"kind": "http_error", "status": 503, "route": "/messages"})
        with pytest.raises(discord.DiscordServerError):
            await channel.send("a 503 is not retried by discord.py")


async def test_slash_commands_deferrals_files_buttons_modals_and_dms(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch) as h:
        world = h.sim.state.world
        guild = world.guilds[0]
        synced = await h.bot.tree.sync(guild=discord.Object(guild.id))
        assert {c.name for c in synced} == {"ping", "slow", "export", "confirm", "feedback", "echo"}
        registered = h.sim.state.commands.find("ping", guild.id)
        assert registered is not None

        reply = await h.interact(name="ping")
        assert reply["callback"]["type"] == 4
        assert reply["callback"]["data"]["content"] == "pong from shard 0"
        assert reply["latency_ms"] >= 0

        target = guild.member_ids[3]
        reply = await h.interact(name="echo", options=[{"name": "text", "type": 3, "value": "cake"},
                                                       {"name": "who", "type": 6, "value": str(target)}])
        assert reply["callback"]["data"]["content"].endswith(f"({target})")
        assert reply["callback"]["data"]["content"].startswith("cake for ")

        reply = await h.interact(name="slow")
        assert reply["callback"]["type"] == 5
        iid = reply["interaction_id"]

        async def slow_done() -> dict[str, Any] | None:
            status, report = await h.control("GET", f"interactions/{iid}")
            return report if status == 200 and len(report["followups"]) == 2 else None

        report = await wait_for(slow_done, timeout=15, message="the deferred command's follow-ups")
        assert report["followups"][0]["content"] == "slow answer" and report["followups"][0]["replaced_original"]
        assert report["original_edits"][0]["content"] == "slow answer (edited)"
        assert report["original"]["content"] == "slow answer (edited)"
        assert report["followups"][1]["flags"] & 64

        reply = await h.interact(name="export")
        files = reply["callback"]["files"]
        assert files[0]["filename"] == "export.json" and files[0]["size"] > 100
        assert reply["callback"]["data"]["flags"] & 64

        reply = await h.interact(name="confirm")
        message_id = reply["response_message_id"]
        assert reply["callback"]["data"]["components"][0]["components"][0]["custom_id"] == "confirm"
        reply = await h.interact(kind="component", custom_id="confirm", component_type=2, message_id=message_id)
        assert reply["callback"]["type"] == 7
        assert reply["callback"]["data"]["content"] == f"confirmed by {guild.member_ids[0]}"
        stored = h.sim.state.messages.get(guild.channels[0].id, int(message_id))
        assert stored is not None and stored["content"].startswith("confirmed") and stored["components"] == []

        reply = await h.interact(name="feedback")
        assert reply["callback"]["type"] == 9
        modal = reply["callback"]["data"]
        reply = await h.interact(kind="modal_submit", custom_id=modal["custom_id"],
                                 values={"text": "lovely tavern"})
        assert reply["callback"]["data"]["content"] == "thanks!"

        async def dm() -> dict[str, Any] | None:
            status, view = await h.control("GET", f"dms/{guild.member_ids[0]}")
            return view if status == 200 and view["messages"] else None

        view = await wait_for(dm, timeout=15, message="the feedback DM")
        assert view["messages"][0]["content"] == "We got your feedback: lovely tavern"
        assert not h.errors, h.errors
        assert h.sim.state.stats.acknowledged == 8
