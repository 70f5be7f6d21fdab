"""Privacy and audit end to end: export by DM, erasure behind a confirm button, a chain that still verifies."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from db.crypto import KeyRing
from db.pseudonyms import Pseudonyms
from innkeeper.settings import Settings
from tests.e2e.commands import (
    CommandBotFactory,
    channel_messages,
    content_of,
    followups,
    is_ephemeral,
    load_world,
    options,
    prefix,
    slash,
    sub,
)
from tests.e2e.test_commands_feedback import buttons, dm_channel, interact
from tests.procs import SimulatorProc
from tests.support import wait_for

pytestmark = pytest.mark.e2e


async def count(dsn: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def test_export_delete_and_audit(sim: SimulatorProc, migrated_db: str, command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    bot = await command_bot()
    user, uid = world.members[0], int(world.members[0])
    # some data about the user, including a refused admin action in the audit log
    await slash(sim, world, user, "remind", options(when="3d", text="private thing"))
    await slash(sim, world, user, "feedback", sub("submit", options(text="my feedback")))
    await slash(sim, world, user, "alias", sub("add", options(name="pp", command="ping")))
    await slash(sim, world, user, "settings", sub("set", options(key="automod", value="low")))
    await slash(sim, world, user, "settings", sub("set", options(key="prefix", value="$")))  # refused, audited too
    await slash(sim, world, world.owner, "settings", sub("set", options(key="automod", value="medium")))

    exported = await slash(sim, world, user, "privacy", sub("export"))
    assert exported["callback"]["type"] == 5
    (done,) = await followups(sim, exported)
    assert done["content"].startswith("I've sent your data by DM (1 aliases, 1 feedback,")
    dm = await dm_channel(sim, user)

    async def export_file() -> dict[str, Any] | None:
        for m in await channel_messages(sim, dm):
            for a in m.get("attachments") or []:
                if a["filename"] == f"innkeeper-data-{uid}.json":
                    return a  # type: ignore[no-any-return]
        return None

    attachment = await wait_for(export_file, timeout=15, message="the export file by DM")
    assert attachment["size"] > 200

    # delete: only the user may press the buttons; cancel changes nothing, confirm erases
    asked = await slash(sim, world, user, "privacy", sub("delete"))
    assert is_ephemeral(asked) and "Are you sure?" in content_of(asked)
    nav = buttons(asked["callback"]["data"])
    cancelled = await interact(sim, world, user, bot=bot, kind="component", custom_id=nav["Cancel"]["custom_id"],
                               message_id=asked["response_message_id"])
    assert "nothing was changed" in cancelled["callback"]["data"]["content"]
    assert await count(migrated_db, "SELECT count(*) FROM reminders WHERE user_id = $1", uid) == 1
    asked = await slash(sim, world, user, "privacy", sub("delete"))
    nav = buttons(asked["callback"]["data"])
    stranger = await interact(sim, world, world.members[1], bot=bot, kind="component",
                              custom_id=nav["Erase my data"]["custom_id"], message_id=asked["response_message_id"])
    assert "someone else's" in content_of(stranger)
    erased = await interact(sim, world, user, bot=bot, kind="component", custom_id=nav["Erase my data"]["custom_id"],
                            message_id=asked["response_message_id"])
    assert erased["callback"]["type"] == 7 and "records about you were erased" in erased["callback"]["data"]["content"]
    for table, column in (("reminders", "user_id"), ("feedback", "author_id"), ("command_usage", "user_id"),
                          ("audit_log", "actor_id")):
        assert await count(migrated_db, f"SELECT count(*) FROM {table} WHERE {column} = $1", uid) == 0, table
    assert await count(migrated_db, "SELECT count(*) FROM aliases WHERE scope = 'user' AND scope_id = $1", uid) == 0

    # the audit log: admins see it (the redaction is marked), the chain still verifies
    assert "E5002" in content_of(await slash(sim, world, user, "audit", sub("recent")))
    recent = content_of(await slash(sim, world, world.owner, "audit", sub("recent")))
    assert "command.settings.set" in recent and "redacted on the user's request" in recent
    # both refused attempts are still there (gathered in one row), by one pseudonym: the person is gone,
    # what they did is not
    settings = Settings(api_url=sim.url, encryption_keys=("dev",))
    pseudonym = Pseudonyms.from_settings(settings, KeyRing.from_settings(settings)).of(uid)
    assert recent.count(f"`{pseudonym}` command.settings.set **refused** ×2") == 1, recent
    assert str(uid) not in recent
    verified = await slash(sim, world, world.owner, "audit", sub("verify"))
    (verdict,) = await followups(sim, verified)
    assert verdict["content"].startswith("The audit log is intact:")
    by_prefix = await prefix(sim, world, world.owner, "!audit verify")
    assert by_prefix["content"].startswith("The audit log is intact:")

    retention = content_of(await slash(sim, world, user, "privacy", sub("retention")))
    assert "command usage: 90 days" in retention and "encrypted at rest" in retention


async def test_a_cluster_applies_the_stated_retention_by_itself(sim: SimulatorProc, migrated_db: str,
                                                                command_bot: CommandBotFactory) -> None:
    world = await load_world(sim)
    conn = await asyncpg.connect(migrated_db)
    try:  # usage older than the stated 90 days, left by a bot that ran before (and no cron job)
        await conn.execute("INSERT INTO command_usage (used_at, user_id, command, success) "
                           "SELECT now() - interval '100 days', g, 'ping', true FROM generate_series(1, 5) g")
    finally:
        await conn.close()
    await command_bot()

    async def gone() -> bool:
        old = "SELECT count(*) FROM command_usage WHERE used_at < now() - interval '90 days'"
        return await count(migrated_db, old) == 0

    await wait_for(gone, timeout=30, message="the cluster's own retention run")
    retention = content_of(await slash(sim, world, world.members[0], "privacy", sub("retention")))
    assert "command usage: 90 days" in retention and "Older data is deleted automatically, every hour." in retention
