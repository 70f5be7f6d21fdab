"""Reminders end to end, including exactly-once delivery when the cluster that took one is killed."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.commands import (
    CommandBotFactory,
    World,
    channel_messages,
    content_of,
    is_ephemeral,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.procs import SimulatorProc, cluster_env, start_cluster
from tests.support import wait_for

pytestmark = pytest.mark.e2e


async def deliveries(sim: SimulatorProc, world: World, reminder_id: int) -> list[dict[str, Any]]:
    marker = f"reminder #{reminder_id}"
    return [m for m in await channel_messages(sim, world.channel_id, limit=100)
            if m["author"].get("bot") and m["content"].endswith(marker)]


async def delivered_at(dsn: str, reminder_id: int) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT delivered_at FROM reminders WHERE id = $1", reminder_id)
    finally:
        await conn.close()


async def test_remind_list_cancel_and_delivery(sim: SimulatorProc, migrated_db: str,
                                               command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    await command_bot()
    user = world.members[0]
    made = await slash(sim, world, user, "remind", options(when="2s", text="tea time @everyone"))
    assert "Reminder #1" in content_of(made) and not is_ephemeral(made)
    later = await prefix(sim, world, user, "!remind 2h30m water the plants")
    assert "Reminder #2" in later["content"] and "(in 2h 30m)" in later["content"]
    bad = await prefix(sim, world, user, "!remind soonish do things")
    assert "E5001" in bad["content"] and "duration like" in bad["content"]
    past = await slash(sim, world, user, "remind", options(when="2001-01-01 10:00", text="too late"))
    assert "in the past" in content_of(past)

    (message,) = await wait_for(lambda: deliveries(sim, world, 1), timeout=20, message="reminder #1 delivered")
    assert message["content"].startswith(f"<@{user}> ⏰ tea time")
    assert "@everyone" not in message["content"] and message["mention_everyone"] is False
    assert [m["id"] for m in message["mentions"]] == [user]
    await wait_for(lambda: delivered_at(migrated_db, 1), timeout=10, message="reminder #1 marked delivered")

    listing = await slash(sim, world, user, "reminders", sub("list"))
    assert "#2" in content_of(listing) and "#1" not in content_of(listing) and is_ephemeral(listing)
    assert "no pending reminder #1" in content_of(await slash(sim, world, user, "reminders",
                                                              sub("cancel", options(id=1))))
    assert "no pending reminder #2" in content_of(await slash(sim, world, world.members[1], "reminders",
                                                              sub("cancel", options(id=2))))
    assert content_of(await slash(sim, world, user, "reminders", sub("cancel", options(id=2)))) == \
        "Reminder #2 is cancelled."


async def test_a_reminder_fires_once_when_its_cluster_is_killed(tmp_path: Path, sim: SimulatorProc,
                                                                migrated_db: str, redis_url: str,
                                                                redis_prefix: str) -> None:
    world = await load_world(sim)
    env = cluster_env(sim, redis_prefix, redis_url=redis_url, database_url=migrated_db,
                      extra={"INNKEEPER_ENCRYPTION_KEYS": "dev"})
    first = start_cluster(tmp_path / "logs", env, shard_ids="0,1", shard_count=2)
    second = None
    try:
        async def answered() -> dict[str, Any] | None:
            assert first.alive(), first.output()
            try:
                reply = await slash(sim, world, world.members[0], "ping", timeout=2)
            except AssertionError:
                return None
            return reply if content_of(reply).startswith("Pong!") else None

        await wait_for(answered, timeout=60, interval=0.5, message="the first cluster to answer")
        made = await slash(sim, world, world.members[0], "remind", options(when="6s", text="exactly once"))
        assert "Reminder #1" in content_of(made), made
        first.stop(signal.SIGKILL)  # between scheduling and delivery
        assert await delivered_at(migrated_db, 1) is None
        second = start_cluster(tmp_path / "logs", env, shard_ids="0,1", shard_count=2)
        await wait_for(lambda: delivered_at(migrated_db, 1), timeout=90, interval=0.5,
                       message="the reminder delivered by the second cluster")
        found = await deliveries(sim, world, 1)
        assert len(found) == 1, found
        assert found[0]["content"].startswith(f"<@{world.members[0]}> ⏰ exactly once")
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop()


async def test_a_reminder_set_in_dms_comes_by_dm(sim: SimulatorProc, command_bot: CommandBotFactory) -> None:
    from tests.e2e.test_commands_feedback import dm_channel

    world = await load_world(sim)
    await command_bot()
    user = world.members[2]
    made = await slash(sim, world, user, "remind", options(when="1s", text="from a DM"), guild=False)
    assert "Reminder #1" in content_of(made)
    assert "no pending reminder" not in content_of(await slash(sim, world, user, "help", guild=False))
    dm = await dm_channel(sim, user)

    async def delivered() -> list[dict[str, Any]]:
        return [m for m in await channel_messages(sim, dm) if m["content"].endswith("reminder #1")]

    (message,) = await wait_for(delivered, timeout=20, message="the reminder in the user's DMs")
    assert message["content"].startswith(f"<@{user}> ⏰ from a DM")
    # guild-only commands explain themselves in DMs
    refused = await slash(sim, world, user, "settings", sub("show"), guild=False)
    assert "only works in a server" in content_of(refused)
