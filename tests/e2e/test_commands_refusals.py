"""A member spamming a command they may not run costs the bot a bounded number of replies and audit rows.

The spammer is a plain member repeating ``!settings set prefix x`` and its slash form. Each attempt
is refused by the permission stage; the refusal throttle lets a few of them be answered and keeps
the rest silent, and the audit log gets one row with the count instead of a row per attempt, so the
server's real entries stay on top of ``/audit recent``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import pytest

from shard.pipeline.command_metrics import COMMANDS_TOTAL
from shard.pipeline.refusals import REFUSAL_RULE
from tests.e2e.commands import (
    CommandBotFactory,
    World,
    channel_messages,
    content_of,
    load_world,
    options,
    slash,
    sub,
)
from tests.procs import SimulatorProc, http_json
from tests.support import wait_for

pytestmark = pytest.mark.e2e

PREFIX_ATTEMPTS, SLASH_ATTEMPTS = 18, 6


def forbidden_so_far() -> float:
    return float(COMMANDS_TOTAL.labels("settings set", "forbidden")._value.get())


async def audit_rows(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT action, actor_id, details FROM audit_log ORDER BY id")
    finally:
        await conn.close()
    return [{"action": r["action"], "actor_id": r["actor_id"], "details": json.loads(r["details"])} for r in rows]


async def post(sim: SimulatorProc, world: World, user: str, content: str) -> str:
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": world.guild_id, "channel_id": world.channel_id, "author_id": user, "content": content})
    assert status == 200, posted
    return str(posted["id"])


async def inject(sim: SimulatorProc, world: World, user: str, name: str, opts: list[dict[str, Any]]) -> str:
    """A slash command that does not wait for an answer (a silenced refusal gets none)."""
    status, reply = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/interactions", {
        "guild_id": world.guild_id, "channel_id": world.channel_id, "user_id": user, "name": name,
        "options": opts, "wait": False})
    assert status == 202, reply
    return str(reply["interaction_id"])


async def answered(sim: SimulatorProc, interaction_id: str) -> bool:
    status, report = await asyncio.to_thread(http_json, "GET", sim.url + f"/_sim/interactions/{interaction_id}")
    assert status == 200, report
    return bool(report["acknowledged"])


async def test_spamming_a_refused_command_costs_bounded_replies_and_audit_rows(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bot = await command_bot()
    # the server's real admin action
    done = await slash(sim, world, world.owner, "settings", sub("set", options(key="automod", value="high")))
    assert content_of(done) == "Automod is now high."
    await wait_for(lambda: audit_rows(migrated_db), timeout=10, message="the real audit entry")
    # a plain member spams it, by prefix and by slash
    spammer = world.members[0]
    before = forbidden_so_far()
    started = time.monotonic()
    posted = [await post(sim, world, spammer, "!settings set prefix x") for _ in range(PREFIX_ATTEMPTS)]
    injected = [await inject(sim, world, spammer, "settings", sub("set", options(key="prefix", value="x")))
                for _ in range(SLASH_ATTEMPTS)]
    total = PREFIX_ATTEMPTS + SLASH_ATTEMPTS
    await wait_for(lambda: forbidden_so_far() >= before + total, timeout=30, message="every attempt refused")
    elapsed = time.monotonic() - started
    # bounded replies: messages that answer the spam, plus interaction callbacks
    replies = [m for m in await channel_messages(sim, world.channel_id, limit=100)
               if m["author"].get("bot") and (m.get("message_reference") or {}).get("message_id") in posted]
    callbacks = [i for i in injected if await answered(sim, i)]
    told = len(replies) + len(callbacks)
    windows = 1 + int(elapsed // REFUSAL_RULE.per_seconds)
    assert 1 <= told <= REFUSAL_RULE.rate * windows, (len(replies), len(callbacks), elapsed)
    assert all("E5002" in m["content"] for m in replies)
    # bounded audit rows: the refused attempts become one row (per window) with their count
    assert bot.pipeline.denials.pending == total
    await bot.pipeline.denials.flush(everything=True)
    rows = await audit_rows(migrated_db)
    denied = [r for r in rows if r["details"]["outcome"] == "denied"]
    assert 1 <= len(denied) <= 1 + int(elapsed // bot.pipeline.denials.window_s)
    assert sum(r["details"]["attempts"] for r in denied) == total
    assert {(r["action"], r["actor_id"]) for r in denied} == {("command.settings.set", int(spammer))}
    assert len(rows) == 1 + len(denied)
    # the real entry is still among the latest few
    recent = content_of(await slash(sim, world, world.owner, "audit", sub("recent", options(limit=3))))
    assert f"<@{world.owner}> command.settings.set" in recent and '"automod"' in recent
    assert "**refused** ×" in recent  # the spam, as one line with its count
