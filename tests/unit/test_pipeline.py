"""The pipeline's stages, in order, with fakes for the guild config, throttle and sinks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord.ext import commands
from discord.ext.commands.view import StringView

from innkeeper.errors import CommandError, DatabaseError, ErrorCode
from innkeeper.settings import Settings
from ipc.throttle import ThrottleResult
from shard.pipeline import GuildConfig, Level, Override, Pipeline, ThrottleRule, command
from shard.pipeline.command_metrics import COMMANDS_TOTAL
from shard.pipeline.context import PipelineContext, state_of
from shard.pipeline.core import AuditEvent, ErrorEvent, UsageEvent
from shard.pipeline.refusals import REFUSAL_KEY
from tests.support import wait_for

GUILD_ID, OWNER_ID, GUILD_OWNER_ID, USER_ID, MOD_ROLE = 1000, 1, 2, 3, 77


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.usage: list[UsageEvent] = []
        self.audits: list[AuditEvent] = []
        self.errors: list[ErrorEvent] = []


class FakeConfig:
    def __init__(self, rec: Recorder, cfg: GuildConfig) -> None:
        self.rec, self.cfg = rec, cfg

    async def get(self, guild_id: int) -> GuildConfig:
        self.rec.events.append("config")
        return self.cfg

    async def invalidate(self, guild_id: int) -> None:
        pass


class FakeThrottle:
    """Records "throttle" for a command's rule and "refusal" for the refusal rule."""

    def __init__(self, rec: Recorder, allowed: bool = True) -> None:
        self.rec, self.allowed = rec, allowed

    async def hit(self, command: str, user_id: int, guild_id: int | None, rule: ThrottleRule) -> ThrottleResult:
        if command == REFUSAL_KEY:
            self.rec.events.append("refusal")
            return ThrottleResult(True)
        self.rec.events.append("throttle")
        return ThrottleResult(self.allowed, 0.0 if self.allowed else 2.5)


class Sinks:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def record(self, event: UsageEvent) -> None:
        self.rec.events.append("usage")
        self.rec.usage.append(event)

    async def append(self, event: AuditEvent) -> None:
        self.rec.events.append("audit")
        self.rec.audits.append(event)


class ErrorSinkFake:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def record(self, event: ErrorEvent) -> None:
        self.rec.errors.append(event)


class FakeCtx(commands.Context[Any]):
    """A real Context over a fake message; ``send`` records instead of calling Discord."""

    def __init__(self, bot: commands.Bot, cmd: commands.Command[Any, ..., Any], author: Any, guild: Any) -> None:
        message = SimpleNamespace(guild=guild, author=author, channel=SimpleNamespace(id=5), _state=None,
                                  to_reference=lambda **kw: None, content="")
        super().__init__(message=message, bot=bot, view=StringView(""), prefix="!")  # type: ignore[arg-type]
        self.command = cmd
        self.sent: list[dict[str, Any]] = []

    async def send(self, content: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        self.sent.append({"content": content, **kwargs})
        return None


def member(user_id: int, *, roles: tuple[int, ...] = (), perms: discord.Permissions | None = None) -> Any:
    return SimpleNamespace(id=user_id, roles=[SimpleNamespace(id=r) for r in roles],
                           guild_permissions=perms or discord.Permissions.none(), bot=False)


GUILD = SimpleNamespace(id=GUILD_ID, owner_id=GUILD_OWNER_ID, shard_id=0)


class Cog(commands.Cog):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    @command("hello", description="Say hello.", throttle=ThrottleRule(1, 60, "user"))
    async def hello(self, ctx: commands.Context[Any], *, text: commands.Range[str, 1, 10] = "hi") -> None:
        self.rec.events.append(f"body:{text}")

    @command("ban", description="An admin action.", level=Level.ADMIN, floor=Level.MOD, audit=True,
             feature="settings")
    async def ban(self, ctx: commands.Context[Any], count: commands.Range[int, 1, 5]) -> None:
        self.rec.events.append(f"body:{count}")

    @command("slow", description="Never finishes.", timeout=0.05)
    async def slow(self, ctx: commands.Context[Any]) -> None:
        self.rec.events.append("body")
        await asyncio.Event().wait()  # never finishes: only the command timeout ends it

    @command("slowreply", description="Answers just as its time runs out.", timeout=0.05)
    async def slowreply(self, ctx: commands.Context[Any]) -> None:
        self.rec.events.append("body")
        await ctx.send("the answer")  # still on its way when the timeout fires
        await asyncio.Event().wait()

    @command("feed", description="Toggleable.", feature="feedback")
    async def feed(self, ctx: commands.Context[Any]) -> None:
        self.rec.events.append("body")

    @command("secret", description="Owners only.", level=Level.OWNER, floor=Level.OWNER)
    async def secret(self, ctx: commands.Context[Any]) -> None:
        self.rec.events.append("body:secret")

    @command("boom", description="Fails.")
    async def boom(self, ctx: commands.Context[Any]) -> None:
        raise RuntimeError("internal detail that users must not see")


async def setup(cfg: GuildConfig | None = None, *, allowed: bool = True, owners: frozenset[int] = frozenset({OWNER_ID})
                ) -> tuple[commands.Bot, Recorder, Cog, Pipeline]:
    rec = Recorder()
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    cog = Cog(rec)
    await bot.add_cog(cog)
    sinks = Sinks(rec)
    pipeline = Pipeline(Settings(owner_ids=owners, command_timeout_s=5), cluster_id=3,
                        config=FakeConfig(rec, cfg or GuildConfig(GUILD_ID)), throttle=FakeThrottle(rec, allowed),
                        usage=sinks, audit=sinks, errors=ErrorSinkFake(rec))
    bot.pipeline = pipeline  # type: ignore[attr-defined]
    return bot, rec, cog, pipeline


async def run(bot: commands.Bot, name: str, author: Any, *args: Any, guild: Any = GUILD, **kwargs: Any) -> FakeCtx:
    """Invoke like discord.py does (callback, then the error path on failure)."""
    cmd = bot.get_command(name)
    assert cmd is not None
    ctx = FakeCtx(bot, cmd, author, guild)
    try:
        await cmd.callback(cmd.cog, ctx, *args, **kwargs)  # type: ignore[arg-type]
    except Exception as exc:  # what discord.py does: hand it to the error path
        await bot.pipeline.on_command_error(ctx, exc)  # type: ignore[attr-defined]
    return ctx


async def test_success_runs_every_stage_in_order() -> None:
    bot, rec, _, _ = await setup()
    ctx = await run(bot, "hello", member(USER_ID), text="yo")
    assert rec.events == ["config", "throttle", "body:yo", "usage"]
    assert state_of(ctx).outcome == "ok"
    (use,) = rec.usage
    assert (use.command, use.user_id, use.guild_id, use.cluster_id) == ("hello", USER_ID, GUILD_ID, 3)
    assert use.success is True
    assert use.latency_ms >= 0
    assert ctx.sent == []


async def test_validation_failure_stops_before_any_other_stage() -> None:
    bot, rec, _, _ = await setup()
    ctx = await run(bot, "hello", member(USER_ID), text="x" * 11)
    assert rec.events == ["refusal", "usage"]  # the refusal is counted before the reply
    assert state_of(ctx).outcome == "bad_argument"
    (reply,) = ctx.sent
    assert "at most 10 characters" in reply["content"] and "E5001" in reply["content"]
    assert "Usage: `/hello" in reply["content"]
    assert reply["allowed_mentions"].to_dict()["parse"] == []


async def test_control_characters_are_refused() -> None:
    bot, rec, _, _ = await setup()
    ctx = await run(bot, "hello", member(USER_ID), text="a\x00b")
    assert state_of(ctx).outcome == "bad_argument"
    assert "control characters" in ctx.sent[0]["content"]


async def test_feature_toggle_comes_before_permission_and_throttle() -> None:
    cfg = GuildConfig(GUILD_ID, features={"feedback": False})
    bot, rec, _, _ = await setup(cfg)
    ctx = await run(bot, "feed", member(USER_ID))
    assert rec.events == ["config", "refusal", "usage"]
    assert state_of(ctx).outcome == "disabled"
    assert "E5004" in ctx.sent[0]["content"]


async def test_a_disabled_command_override_refuses() -> None:
    cfg = GuildConfig(GUILD_ID, overrides={"hello": Override(None, enabled=False)})
    bot, rec, _, _ = await setup(cfg)
    ctx = await run(bot, "hello", member(USER_ID))
    assert state_of(ctx).outcome == "disabled" and "body:hi" not in rec.events


async def test_permission_refusal_is_audited_and_not_throttled() -> None:
    bot, rec, _, pipeline = await setup()
    ctx = await run(bot, "ban", member(USER_ID), 2)
    assert rec.events == ["config", "refusal", "usage"]  # the command's own throttle is not touched
    assert state_of(ctx).outcome == "forbidden"
    assert "needs the admin level; yours is everyone" in ctx.sent[0]["content"]
    assert rec.audits == [] and pipeline.denials.pending == 1  # gathered, written when its window closes
    await pipeline.denials.flush(everything=True)
    (audit,) = rec.audits
    assert audit.action == "command.ban" and audit.actor_id == USER_ID and audit.details["outcome"] == "denied"
    assert audit.details["attempts"] == 1 and audit.details["args"] == {"count": 2}


async def test_role_levels_and_overrides_grant_access() -> None:
    cfg = GuildConfig(GUILD_ID, role_levels={MOD_ROLE: Level.MOD}, overrides={"ban": Override(Level.MOD)})
    bot, rec, _, _ = await setup(cfg)
    ctx = await run(bot, "ban", member(USER_ID, roles=(MOD_ROLE,)), 3)
    assert rec.events == ["config", "throttle", "body:3", "audit", "usage"]
    assert rec.audits[0].details == {"outcome": "ok", "args": {"count": 3}, "channel_id": 5, "level": "mod"}
    assert state_of(ctx).level is Level.MOD


async def test_an_override_cannot_go_below_the_floor() -> None:
    cfg = GuildConfig(GUILD_ID, overrides={"ban": Override(Level.EVERYONE)})
    bot, rec, _, _ = await setup(cfg)
    ctx = await run(bot, "ban", member(USER_ID), 1)
    assert state_of(ctx).outcome == "forbidden"  # floor is mod


async def test_discord_permissions_count() -> None:
    bot, rec, _, _ = await setup()
    admin = member(USER_ID, perms=discord.Permissions(administrator=True))
    assert state_of(await run(bot, "ban", admin, 1)).outcome == "ok"
    mod = member(USER_ID, perms=discord.Permissions(manage_guild=True))
    assert state_of(await run(bot, "ban", mod, 1)).outcome == "forbidden"
    assert state_of(await run(bot, "ban", member(GUILD_OWNER_ID), 1)).outcome == "ok"


async def test_throttled_commands_do_not_run() -> None:
    bot, rec, _, _ = await setup(allowed=False)
    ctx = await run(bot, "hello", member(USER_ID))
    assert rec.events == ["config", "throttle", "refusal", "usage"]
    assert state_of(ctx).outcome == "throttled"
    assert "too often — try again in 3 s" in ctx.sent[0]["content"] and "E5003" in ctx.sent[0]["content"]


async def test_owners_are_not_throttled() -> None:
    bot, rec, _, _ = await setup(allowed=False)
    ctx = await run(bot, "hello", member(OWNER_ID))
    assert rec.events == ["config", "body:hi", "usage"]
    assert state_of(ctx).level is Level.OWNER


async def test_timeouts_stop_the_command() -> None:
    bot, rec, _, _ = await setup()
    ctx = await run(bot, "slow", member(USER_ID))
    assert state_of(ctx).outcome == "timeout"
    assert "E5005" in ctx.sent[0]["content"]


class SlowSendCtx(PipelineContext):
    """The pipeline's real context over a fake message; its delivery to Discord takes 0.2 s."""

    def __init__(self, bot: commands.Bot, cmd: commands.Command[Any, ..., Any], author: Any, guild: Any) -> None:
        message = SimpleNamespace(guild=guild, author=author, channel=SimpleNamespace(id=5), _state=None,
                                  to_reference=lambda **kw: None, content="")
        super().__init__(message=message, bot=bot, view=StringView(""), prefix="!")
        self.command = cmd
        self.sent: list[str | None] = []

    async def _deliver(self, content: str | None = None, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        self.sent.append(content)


async def test_a_timeout_during_the_answer_lets_it_finish_and_sends_no_second_one() -> None:
    bot, rec, _, _ = await setup()
    cmd = bot.get_command("slowreply")
    assert cmd is not None
    ctx = SlowSendCtx(bot, cmd, member(USER_ID), GUILD)
    try:
        await cmd.callback(cmd.cog, ctx)  # type: ignore[arg-type]
    except Exception as exc:
        await bot.pipeline.on_command_error(ctx, exc)  # type: ignore[attr-defined]
    # The error path is done; the shielded delivery outlives the cancelled body and lands once.
    await wait_for(lambda: ctx.sent, timeout=5, message="the answer to land")
    assert ctx.sent == ["the answer"]  # and no "took longer than" error besides it
    assert state_of(ctx).outcome == "timeout"


async def test_unexpected_errors_are_hidden_and_stored() -> None:
    bot, rec, _, pipeline = await setup()
    ctx = await run(bot, "boom", member(USER_ID))
    await pipeline.drain()
    assert state_of(ctx).outcome == "error"
    assert "internal detail" not in ctx.sent[0]["content"] and "E9999" in ctx.sent[0]["content"]
    (event,) = rec.errors
    assert event.code == "E9999" and "internal detail" in event.message and event.command == "boom"


async def test_outcome_is_recorded_once_and_counted() -> None:
    bot, rec, _, pipeline = await setup()
    before = COMMANDS_TOTAL.labels("hello", "ok")._value.get()
    ctx = await run(bot, "hello", member(USER_ID))
    pipeline.finish(ctx, "error")  # a second report is ignored
    assert len(rec.usage) == 1
    assert COMMANDS_TOTAL.labels("hello", "ok")._value.get() == before + 1


async def test_dm_invocations_have_no_guild_config() -> None:
    bot, rec, _, _ = await setup()
    await run(bot, "hello", SimpleNamespace(id=USER_ID), guild=None)
    assert rec.events == ["throttle", "body:hi", "usage"]
    assert rec.usage[0].guild_id is None


async def test_commands_refuse_to_run_without_a_pipeline() -> None:
    bot, rec, _, _ = await setup()
    del bot.pipeline  # type: ignore[attr-defined]
    cmd = bot.get_command("hello")
    assert cmd is not None
    with pytest.raises(CommandError) as info:
        await cmd.callback(cmd.cog, FakeCtx(bot, cmd, member(USER_ID), GUILD))  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INTERNAL
    assert rec.events == []


async def test_may_run_matches_the_permission_stage() -> None:
    cfg = GuildConfig(GUILD_ID, features={"feedback": False})
    bot, _, _, pipeline = await setup(cfg)
    user = FakeCtx(bot, bot.get_command("hello"), member(USER_ID), GUILD)  # type: ignore[arg-type]
    assert await pipeline.may_run(user, bot.get_command("hello"))  # type: ignore[arg-type]
    assert not await pipeline.may_run(user, bot.get_command("ban"))  # type: ignore[arg-type]
    assert not await pipeline.may_run(user, bot.get_command("feed"))  # type: ignore[arg-type]


async def test_grants_on_everyone_and_managed_roles_do_not_count() -> None:
    """A level stored for @everyone (id = guild id) or a managed role, before the grant rules refused them."""
    bot_role = SimpleNamespace(id=88, managed=True)
    cfg = GuildConfig(GUILD_ID, role_levels={GUILD_ID: Level.ADMIN, 88: Level.ADMIN, MOD_ROLE: Level.MOD},
                      overrides={"ban": Override(Level.MOD)})
    bot, rec, _, _ = await setup(cfg)
    author = member(USER_ID, roles=(GUILD_ID,))
    author.roles.append(bot_role)
    ctx = await run(bot, "ban", author, 1)
    assert state_of(ctx).outcome == "forbidden" and state_of(ctx).level is Level.EVERYONE
    ctx = await run(bot, "ban", member(USER_ID, roles=(GUILD_ID, MOD_ROLE)), 1)
    assert state_of(ctx).outcome == "ok" and state_of(ctx).level is Level.MOD


class DownConfig(FakeConfig):
    async def get(self, guild_id: int) -> GuildConfig:
        raise DatabaseError("down", code=ErrorCode.DB_UNAVAILABLE)


async def test_an_unknown_configuration_refuses_what_a_guild_could_change() -> None:
    """The database is down and the guild's configuration was never read: no command runs on defaults
    that the guild may have changed; owner-only commands, which no guild can change, still run."""
    bot, rec, _, pipeline = await setup()
    pipeline.config = DownConfig(rec, GuildConfig(GUILD_ID))
    ctx = await run(bot, "hello", member(GUILD_OWNER_ID))
    assert "body:hi" not in rec.events and state_of(ctx).outcome == "error"
    assert "database" in ctx.sent[0]["content"] and "E4001" in ctx.sent[0]["content"]
    ctx = await run(bot, "secret", member(OWNER_ID))
    assert "body:secret" in rec.events and state_of(ctx).outcome == "ok"
    await pipeline.drain()


async def test_an_open_breaker_answers_at_once_and_spares_commands_that_do_not_need_it() -> None:
    from innkeeper.breakers import Breakers

    bot, rec, _, pipeline = await setup()
    breakers = Breakers(threshold=1, open_for=30.0)
    pipeline.breakers = breakers
    breakers["postgres"].failure(breakers["postgres"].enter())  # type: ignore[arg-type]
    ctx = await run(bot, "feed", member(USER_ID))  # the feedback feature keeps its data in PostgreSQL
    assert "body" not in rec.events and "config" not in rec.events  # answered before anything ran
    assert state_of(ctx).outcome == "unavailable"
    (reply,) = ctx.sent
    assert reply["content"].startswith("The database is unreachable right now") and "(E6003)" in reply["content"]
    ctx = await run(bot, "hello", member(USER_ID), text="yo")  # core: needs nothing
    assert "body:yo" in rec.events and state_of(ctx).outcome == "ok"


class HangingCtx(FakeCtx):
    """Discord never acknowledges this context's messages."""

    async def send(self, content: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        self.sent.append({"content": content, **kwargs})
        await asyncio.Event().wait()


async def test_the_error_reply_after_a_timeout_has_a_deadline_too() -> None:
    """The hang the issue saw: a server that never answers the reply held the task until shutdown."""
    import dataclasses

    bot, rec, _, pipeline = await setup()
    pipeline.settings = dataclasses.replace(pipeline.settings, reply_timeout_s=0.1)
    cmd = bot.get_command("slow")
    assert cmd is not None
    ctx = HangingCtx(bot, cmd, member(USER_ID), GUILD)
    started = asyncio.get_running_loop().time()
    try:
        await cmd.callback(cmd.cog, ctx)  # type: ignore[arg-type]
    except Exception as exc:
        await asyncio.wait_for(pipeline.on_command_error(ctx, exc), 5.0)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert state_of(ctx).outcome == "timeout" and "E5005" in ctx.sent[0]["content"]
