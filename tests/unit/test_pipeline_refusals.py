"""Refusals are throttled before any reply, and denied attempts are gathered into one audit row per window."""

from __future__ import annotations

from typing import Any

import discord
import pytest
from discord.ext import commands

from innkeeper.errors import DatabaseError, ErrorCode
from innkeeper.settings import Settings
from ipc.throttle import MemoryThrottle
from shard.pipeline import GuildConfig, Pipeline
from shard.pipeline.context import state_of
from shard.pipeline.denials import DeniedAttempts
from shard.pipeline.events import AuditEvent
from shard.pipeline.refusals import REFUSAL_RULE, RefusalGate
from tests.unit.test_pipeline import (
    GUILD_ID,
    OWNER_ID,
    USER_ID,
    Cog,
    ErrorSinkFake,
    FakeConfig,
    Recorder,
    Sinks,
    member,
    run,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def real_pipeline(clock: Clock) -> tuple[commands.Bot, Recorder, Pipeline]:
    """The pipeline over a real in-process throttle (the one clusters fall back to)."""
    rec = Recorder()
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    await bot.add_cog(Cog(rec))
    sinks = Sinks(rec)
    pipeline = Pipeline(Settings(owner_ids=frozenset({OWNER_ID}), command_timeout_s=5), cluster_id=0,
                        config=FakeConfig(rec, GuildConfig(GUILD_ID)), throttle=MemoryThrottle(clock=clock),
                        usage=sinks, audit=sinks, errors=ErrorSinkFake(rec))
    bot.pipeline = pipeline  # type: ignore[attr-defined]
    return bot, rec, pipeline


async def test_refusals_past_the_rule_get_no_reply() -> None:
    clock = Clock()
    bot, rec, pipeline = await real_pipeline(clock)
    replies = 0
    for attempt in range(12):
        # refusals of every kind count against one rule per user: permission, validation, throttle
        name, args = [("ban", (2,)), ("ban", (9,)), ("hello", ())][attempt % 3]
        ctx = await run(bot, name, member(USER_ID), *args)
        assert state_of(ctx).outcome in ("forbidden", "bad_argument", "ok", "throttled")
        replies += len(ctx.sent)
    # "hello" succeeds once (its own rule is 1 per minute; it answers nothing), then is throttled
    assert replies == REFUSAL_RULE.rate
    # every attempt the permission stage refused is still counted (told or not), none written one by one
    assert rec.audits == [] and pipeline.denials.pending == 4
    assert len(rec.usage) == 12  # and every invocation is still recorded once
    # another user is told; so is a bot owner, however often
    assert len((await run(bot, "ban", member(USER_ID + 1), 2)).sent) == 1
    for _ in range(REFUSAL_RULE.rate + 2):
        assert len((await run(bot, "hello", member(OWNER_ID), text="x" * 11)).sent) == 1
    # once the window has passed, the user is told again
    clock.now += REFUSAL_RULE.per_seconds
    assert len((await run(bot, "ban", member(USER_ID), 2)).sent) == 1


async def test_a_failure_of_the_body_is_not_a_refusal() -> None:
    clock = Clock()
    bot, rec, pipeline = await real_pipeline(clock)
    for _ in range(REFUSAL_RULE.rate):
        await run(bot, "ban", member(USER_ID), 2)  # use up the refusals
    ctx = await run(bot, "boom", member(USER_ID))
    await pipeline.drain()
    assert state_of(ctx).outcome == "error" and len(ctx.sent) == 1  # our failures are always reported


async def test_a_broken_throttle_does_not_silence_anyone() -> None:
    class Broken:
        async def hit(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("throttle down")

    gate = RefusalGate(Broken())
    assert await gate.may_answer("ban", USER_ID, GUILD_ID)


def denial(actor: int = USER_ID, action: str = "command.ban", guild: int | None = GUILD_ID, **details: Any
           ) -> AuditEvent:
    return AuditEvent(guild_id=guild, actor_id=actor, action=action, target_id=None, target=None,
                      details={"outcome": "denied", "args": {"count": 2}, **details})


async def test_denied_attempts_are_one_row_per_user_and_command_per_window() -> None:
    clock = Clock()
    rec = Recorder()
    log = DeniedAttempts(Sinks(rec), window_s=60, clock=clock)
    for _ in range(30):
        log.add(denial())
    log.add(denial(actor=USER_ID + 1))
    log.add(denial(action="command.settings.set"))
    assert await log.flush() == 0 and log.pending == 32  # the windows are still open
    clock.now += 59
    log.add(denial())
    assert await log.flush() == 0
    clock.now += 1
    assert await log.flush() == 3 and log.pending == 0
    rows = {(a.actor_id, a.action): a.details for a in rec.audits}
    assert rows[(USER_ID, "command.ban")]["attempts"] == 31
    assert rows[(USER_ID + 1, "command.ban")]["attempts"] == 1
    assert rows[(USER_ID, "command.settings.set")]["attempts"] == 1
    first = rows[(USER_ID, "command.ban")]
    assert first["outcome"] == "denied" and first["args"] == {"count": 2} and first["window_s"] == 60
    assert first["first_at"] <= first["last_at"]
    # an attempt after the window opens a new one; one left open is written at stop
    log.add(denial())
    clock.now += 61
    log.add(denial())
    await log.stop()
    assert [a.details["attempts"] for a in rec.audits[3:]] == [1, 1]


async def test_open_windows_are_bounded_and_a_failing_sink_loses_only_its_row(caplog: pytest.LogCaptureFixture
                                                                             ) -> None:
    class Flaky(Sinks):
        async def append(self, event: AuditEvent) -> None:
            if event.actor_id == 1:
                raise RuntimeError("database down")
            await super().append(event)

    rec = Recorder()
    log = DeniedAttempts(Flaky(rec), window_s=60, max_open=2, clock=Clock())
    for actor in (1, 2, 3):
        log.add(denial(actor=actor))
    assert log.pending == 2  # the third window was dropped (and counted)
    assert await log.flush(everything=True) == 1
    assert [a.actor_id for a in rec.audits] == [2]
    assert "writing 1 denied attempt(s)" in caplog.text


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        DeniedAttempts(Sinks(Recorder()), window_s=0)


async def test_a_throttled_user_past_the_refusal_rule_hears_nothing() -> None:
    """The command's own throttle refusal is itself a refusal: spamming a command costs bounded replies."""
    clock = Clock()
    bot, rec, _ = await real_pipeline(clock)
    sent = [len((await run(bot, "hello", member(USER_ID))).sent) for _ in range(20)]
    assert sent[0] == 0 and sum(sent) == REFUSAL_RULE.rate  # one use, then five "too often", then silence



async def test_a_database_outage_before_the_body_is_a_refusal_too() -> None:
    """While the guild configuration cannot be read, every attempt fails before the body: bounded replies."""
    class Down(FakeConfig):
        async def get(self, guild_id: int) -> GuildConfig:
            raise DatabaseError("down", code=ErrorCode.DB_UNAVAILABLE)

    clock = Clock()
    bot, rec, pipeline = await real_pipeline(clock)
    pipeline.config = Down(rec, GuildConfig(GUILD_ID))
    sent = [len((await run(bot, "hello", member(USER_ID))).sent) for _ in range(REFUSAL_RULE.rate + 4)]
    await pipeline.drain()
    assert sum(sent) == REFUSAL_RULE.rate


async def test_refusals_of_an_erased_user_are_never_written_by_their_id() -> None:
    """Counted here before an erasure (in this cluster or another): dropped, or written first to be pseudonymised."""
    from datetime import UTC, datetime

    clock = Clock()
    rec = Recorder()
    erasures: dict[int, datetime] = {}

    async def erased_since(ids: Any, since: datetime) -> dict[int, datetime]:
        return {u: at for u, at in erasures.items() if u in ids and at >= since}

    log = DeniedAttempts(Sinks(rec), window_s=60, clock=clock, erased_since=erased_since)
    log.add(denial())
    log.add(denial(actor=USER_ID + 1))
    erasures[USER_ID] = datetime.now(UTC)  # erased in another cluster after the attempt
    clock.now += 61
    assert await log.flush() == 1 and [a.actor_id for a in rec.audits] == [USER_ID + 1]
    # the cluster where the user erases themselves writes their windows first, whatever their age
    log.add(denial(actor=USER_ID + 2))
    log.add(denial(actor=USER_ID + 3))
    assert await log.settle_user(USER_ID + 2) == 1 and rec.audits[-1].actor_id == USER_ID + 2
    assert log.pending == 1  # the others' windows stay open

    async def down(ids: Any, since: datetime) -> dict[int, datetime]:
        raise OSError("database down")

    log.erased_since = down  # cannot tell: kept for the next flush, never written blind
    clock.now += 61
    assert await log.flush() == 0 and log.pending == 1
    log.erased_since = erased_since
    assert await log.flush() == 1 and rec.audits[-1].actor_id == USER_ID + 3
