"""The reminder attack from the security review, end to end against the simulator.

Attackers in their own server deny the bot in a channel, close their DMs, and have many reminders
come due in that channel at once. Before the fix each delivery earned two 403s (the channel, then
the DM fallback), five times over, every second: a few accounts pushed the bot toward Discord's
invalid-request ban, and past its own guard's hard limit, where every REST call of the bot is
refused. The simulator's own counter (``invalid_requests``) must show a small constant per
channel and per attacker's DMs instead, the guard must never refuse, and the bot must keep
answering everyone else.

The bot runs with the shared rate limiter off (``INNKEEPER_SHARED_RATELIMIT=false``): the
per-process guard is then the only one, and its thresholds are set low enough (hard limit 40)
that the old behaviour would have tripped it many times over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest

from db import reminders as db_reminders
from db.crypto import KeyRing
from db.pool import Database
from shard.rest_hook import hook_of
from simulator.world_model import Perm
from tests.e2e.commands import CommandBotFactory, content_of, is_ephemeral, load_world, options, slash, sub
from tests.procs import SimulatorProc, http_json
from tests.support import wait_for

pytestmark = pytest.mark.e2e

ATTACKERS = 3
PER_ATTACKER = 20  # per channel, on top of the one each sets with /remind


async def control(sim: SimulatorProc, method: str, path: str, body: Any = None) -> Any:
    status, answer = await asyncio.to_thread(http_json, method, f"{sim.url}/_sim/{path}", body)
    assert status == 200, (path, answer)
    return answer


async def invalid_requests(sim: SimulatorProc) -> int:
    return int((await asyncio.to_thread(sim.stats))["invalid_requests"])


async def outcomes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT CASE WHEN delivered_at IS NOT NULL THEN 'delivered' "
                                "WHEN failed_at IS NOT NULL THEN failure ELSE 'pending' END AS o, count(*) AS n "
                                "FROM reminders GROUP BY 1")
        return {r["o"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def test_many_reminders_into_a_refusing_channel_cost_a_few_invalid_requests(
        sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bystanders = await load_world(sim, 1)  # another server, going on as usual
    bot = await command_bot(extra={"INNKEEPER_SHARED_RATELIMIT": "false", "INNKEEPER_GUARD_HARD": "40",
                                   "INNKEEPER_GUARD_SOFT": "20"})
    hook = hook_of(bot)
    assert hook is not None and hook.limiter is None and hook.guard.hard == 40
    attackers = world.members[:ATTACKERS]
    denied = world.channel_id  # the bot's cache learns of this one's overwrite (CHANNEL_UPDATE)
    faulty = sim.world(limit=1)["guilds"][0]["channels"][1]  # this one answers 403 with no warning

    # each attacker sets a reminder while the bot may still post
    for user in attackers:
        made = await slash(sim, world, user, "remind", options(when="10s", text="gotcha"))
        assert "Reminder #" in content_of(made), made

    # the attack: deny the bot in one channel, make the other refuse, close the attackers' DMs
    before = await invalid_requests(sim)
    await control(sim, "POST", f"channels/{denied}/overwrites",
                  {"id": str(bot.user.id if bot.user else 0), "type": "member", "deny": Perm.SEND_MESSAGES})
    await control(sim, "POST", "faults", {"kind": "http_error", "status": 403, "count": 100_000,
                                          "route": f"POST /channels/{faulty}/messages"})
    for user in attackers:
        await control(sim, "POST", f"users/{user}/dms", {"open": False})
    # ... and many more reminders, set earlier (the throttle allows 5 a minute), come due together
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    async with Database(migrated_db) as db:
        keys = KeyRing.parse(["dev"], allow_dev=True)
        for user in attackers:
            for channel in (denied, faulty):
                for _ in range(PER_ATTACKER):
                    await db_reminders.create_reminder(db, keys, user_id=int(user), body="gotcha", due_at=due,
                                                       guild_id=int(world.guild_id), channel_id=int(channel))
    innocent = await slash(sim, bystanders, bystanders.members[0], "remind", options(when="3s", text="tea"))
    assert "Reminder #" in content_of(innocent)
    total = ATTACKERS * (1 + 2 * PER_ATTACKER) + 1

    # a new reminder where the bot cannot post is refused up front, kindly
    refused = await slash(sim, world, attackers[0], "remind", options(when="1m", text="again"))
    assert is_ephemeral(refused) and "E2005" in content_of(refused)
    assert "I can't post in this channel" in content_of(refused)

    async def settled() -> dict[str, int] | None:
        now = await outcomes(migrated_db)
        return now if sum(now.values()) == total and "pending" not in now else None

    final = await wait_for(settled, timeout=60, interval=0.5, message="every reminder delivered or undeliverable")
    assert final == {"delivered": 1, "forbidden": total - 1}, final
    spent = await invalid_requests(sim) - before
    # one 403 for the channel the cache could not judge, one per attacker's DMs; nothing per reminder
    assert 0 < spent <= 1 + ATTACKERS, spent
    assert hook.guard.refused == 0 and hook.guard.count() <= 1 + ATTACKERS

    # the bot keeps answering everyone, and tells each attacker once what happened
    assert content_of(await slash(sim, bystanders, bystanders.members[0], "ping")).startswith("Pong!")
    told = content_of(await slash(sim, world, attackers[1], "reminders", sub("list")))
    assert "You have no pending reminders." in told
    assert f"I'm not allowed to post in <#{denied}>, and your DMs are closed to me." in told
    assert f"…and {2 * PER_ATTACKER + 1 - 5} more reminders" in told  # the first five, then a count
    again = content_of(await slash(sim, world, attackers[1], "reminders", sub("list")))
    assert again == "You have no pending reminders."
    assert hook.guard.refused == 0
    await control(sim, "DELETE", "faults")
