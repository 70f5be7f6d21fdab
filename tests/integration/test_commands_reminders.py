"""Reminder delivery against a real PostgreSQL: claims, leases, crash recovery without duplicates."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from db import reminders as db_reminders
from db.crypto import KeyRing
from db.migrate import migrate
from db.pool import Database
from shard.reminder_service import MAX_ATTEMPTS, ReminderService, render_reminder
from tests.support import wait_for

pytestmark = pytest.mark.integration

BOT_ID = 999


class FakeChannel:
    def __init__(self, fail: Exception | None = None) -> None:
        self.messages: list[SimpleNamespace] = []
        self.fail = fail

    async def send(self, content: str, **kwargs: Any) -> SimpleNamespace:
        if self.fail is not None:
            raise self.fail
        msg = SimpleNamespace(author=SimpleNamespace(id=BOT_ID), content=content, nonce=kwargs.get("nonce"))
        self.messages.append(msg)
        return msg

    async def history(self, limit: int = 50) -> AsyncIterator[SimpleNamespace]:
        for m in reversed(self.messages[-limit:]):
            yield m


class FakeBot:
    def __init__(self, channel: FakeChannel, dm: FakeChannel) -> None:
        self.user = SimpleNamespace(id=BOT_ID)
        self.channel, self.dm = channel, dm

    def get_partial_messageable(self, channel_id: int, *, guild_id: int | None = None) -> FakeChannel:
        return self.channel

    async def create_dm(self, user: Any) -> FakeChannel:
        return self.dm


class _Resp:
    status = 500
    reason = "boom"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url)
    async with Database(database_url) as database:
        yield database


KEYS = KeyRing.parse(["dev"], allow_dev=True)  # the bot under test talks to the simulator


async def due_reminder(db: Database, **kwargs: Any) -> int:
    item = await db_reminders.create_reminder(db, KEYS, user_id=42, body="stretch", guild_id=1, channel_id=2,
                                              due_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1), **kwargs)
    return item.id


def service(db: Database, channel: FakeChannel, dm: FakeChannel | None = None, cluster: int = 0,
            lease: float = 60.0) -> ReminderService:
    return ReminderService(FakeBot(channel, dm or FakeChannel()), db, SimpleNamespace(available=True),  # type: ignore[arg-type]
                           KEYS, cluster_id=cluster, lease=lease)


async def test_two_clusters_deliver_each_reminder_once(db: Database) -> None:
    ids = [await due_reminder(db) for _ in range(20)]
    channel = FakeChannel()
    a, b = service(db, channel, cluster=0), service(db, channel, cluster=1)
    counts = await asyncio.gather(a.tick(), b.tick())
    assert sum(counts) == 20
    assert sorted(m.content for m in channel.messages) == sorted(
        render_reminder(SimpleNamespace(id=i, user_id=42, body="stretch")) for i in ids)  # type: ignore[arg-type]
    assert await a.tick() == 0 and await b.tick() == 0


async def test_a_crash_after_sending_does_not_send_twice(db: Database) -> None:
    rid = await due_reminder(db)
    channel = FakeChannel()
    crashed = service(db, channel, lease=0.2)
    (claimed,) = await db_reminders.claim_due(db, KEYS, crashed.claimer, lease=0.2)
    await crashed.send(claimed)  # ...and the process dies before marking it
    survivor = service(db, channel, cluster=1)
    # nothing to claim until the lease runs out; then the survivor delivers it
    assert await wait_for(survivor.tick, timeout=10, message="the crashed claim's lease to run out") == 1
    assert len(channel.messages) == 1 and channel.messages[0].content.endswith(f"reminder #{rid}")
    row = await db_reminders.get_reminder(db, KEYS, rid)
    assert row is not None and row.delivered_at is not None and row.attempts == 2


async def test_a_crash_before_sending_is_delivered_by_another_cluster(db: Database) -> None:
    rid = await due_reminder(db)
    channel = FakeChannel()
    await db_reminders.claim_due(db, KEYS, "cluster-dead", lease=0.2)
    survivor = service(db, channel, cluster=1)
    assert await survivor.tick() == 0  # still leased
    assert await wait_for(survivor.tick, timeout=10, message="the dead claim's lease to run out") == 1
    assert [m.content.endswith(f"reminder #{rid}") for m in channel.messages] == [True]


async def test_failed_sends_are_retried_then_dropped(db: Database) -> None:
    rid = await due_reminder(db)
    broken = FakeChannel(fail=discord.HTTPException(_Resp(), "server error"))  # type: ignore[arg-type]
    svc = service(db, broken)
    for _ in range(MAX_ATTEMPTS - 1):
        assert await svc.tick() == 0  # released for another try
    assert await svc.tick() == 1  # the last try gives up and marks it, so it cannot loop forever
    row = await db_reminders.get_reminder(db, KEYS, rid)
    assert row is not None and row.delivered_at is not None and row.attempts == MAX_ATTEMPTS


async def test_a_forbidden_channel_falls_back_to_dms(db: Database) -> None:
    await due_reminder(db)
    forbidden = FakeChannel(fail=discord.Forbidden(_Resp(), "no access"))  # type: ignore[arg-type]
    dm = FakeChannel()
    assert await service(db, forbidden, dm).tick() == 1
    assert len(dm.messages) == 1 and dm.messages[0].content.startswith("<@42> ⏰ stretch")
