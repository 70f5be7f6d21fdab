"""Where answers go: a private answer to a prefix command goes by DM, never into the channel."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
from discord.ext import commands

from shard.channel_access import RefusedTargets
from shard.pipeline import command, respond
from shard.pipeline.context import DM_POINTER, answers_privately, tell
from tests.unit.test_pipeline import GUILD, USER_ID, FakeCtx, member


class FakeDM:
    def __init__(self, *, refuse: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refuse = refuse
        self.attempts = 0

    async def send(self, content: str | None = None, **kwargs: Any) -> Any:
        self.attempts += 1
        if self.refuse:
            response = SimpleNamespace(status=403, reason="Forbidden")
            raise discord.Forbidden(response, {"code": 50007, "message": "Cannot send messages to this user"})
        self.sent.append({"content": content, **kwargs})
        return SimpleNamespace(id=1)


class Cog(commands.Cog):
    @command("secret", description="Private answers.", ephemeral=True)
    async def secret(self, ctx: commands.Context[Any]) -> None:
        pass

    @command("public", description="Public answers.")
    async def public(self, ctx: commands.Context[Any]) -> None:
        pass


async def context(name: str, *, guild: Any = GUILD, refuse: bool = False) -> tuple[FakeCtx, FakeDM]:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    await bot.add_cog(Cog())
    dm = FakeDM(refuse=refuse)
    author = member(USER_ID)
    author.dm_channel = None

    async def create_dm() -> FakeDM:
        return dm

    author.create_dm = create_dm
    cmd = bot.get_command(name)
    assert cmd is not None
    return FakeCtx(bot, cmd, author, guild), dm


async def test_a_private_prefix_answer_goes_by_dm_with_a_pointer_in_the_channel() -> None:
    ctx, dm = await context("secret")
    assert answers_privately(ctx)
    await respond(ctx, "audit log: secret things")
    await respond(ctx, "page two")
    assert [m["content"] for m in dm.sent] == ["audit log: secret things", "page two"]
    assert [m["content"] for m in ctx.sent] == [DM_POINTER]  # once, and nothing of the answer
    assert ctx.sent[0]["allowed_mentions"].to_dict()["parse"] == []


async def test_closed_dms_get_a_pointer_to_the_slash_form_and_never_the_answer() -> None:
    ctx, dm = await context("secret", refuse=True)
    await respond(ctx, "audit log: secret things")
    await respond(ctx, "page two")
    assert dm.sent == []
    (pointer,) = ctx.sent
    assert "`/secret`" in pointer["content"] and "secret things" not in pointer["content"]


async def test_public_answers_failures_and_dms_stay_where_they_are() -> None:
    ctx, dm = await context("public")
    await respond(ctx, "for everyone")
    assert [m["content"] for m in ctx.sent] == ["for everyone"] and dm.sent == []
    ctx, dm = await context("secret")
    await respond(ctx, "shown on purpose", ephemeral=False)  # a command may answer publicly
    await tell(ctx, "You can't do that (E5002)")  # why it failed is said in place
    assert [m["content"] for m in ctx.sent] == ["shown on purpose", "You can't do that (E5002)"] and dm.sent == []
    ctx, dm = await context("secret", guild=None)  # a DM is private already
    assert not answers_privately(ctx)
    await respond(ctx, "here")
    assert [m["content"] for m in ctx.sent] == ["here"] and dm.sent == []


async def test_dms_that_refused_are_not_asked_again_for_a_while() -> None:
    """Repeating a private command with DMs closed costs one 403, not one each time."""
    refused = RefusedTargets(ttl=60, clock=lambda: 0.0)
    attempts, pointers = 0, []
    for _ in range(3):
        ctx, dm = await context("secret", refuse=True)
        ctx.refused_targets = refused  # type: ignore[attr-defined]  # what ClusterBot.get_context sets
        await respond(ctx, "audit log: secret things")
        attempts += dm.attempts
        pointers += [m["content"] for m in ctx.sent]
    assert attempts == 1 and refused.get("dm", USER_ID) == "dm_closed"
    assert len(pointers) == 3 and all("`/secret`" in p and "secret things" not in p for p in pointers)
