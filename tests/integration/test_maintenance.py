"""Retention runs inside the clusters, one at a time, once per interval for the whole bot."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from db import reminders
from db.maintenance import LOCK_KEY, run_maintenance
from db.pool import Database
from db.privacy import RetentionPolicy
from db.testing import legacy_value, make_keys, migrated
from shard.maintenance import MaintenanceService
from tests.support import wait_for

pytestmark = pytest.mark.integration

POLICY = RetentionPolicy(usage_days=30, errors_days=30, feedback_days=30, reminders_days=30)
HOURLY = dt.timedelta(hours=1)
KEYS = make_keys()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


async def _old_usage(db: Database, n: int = 3) -> None:
    await db.execute("t", "INSERT INTO command_usage (used_at, user_id, command, success) "
                          "SELECT now() - interval '100 days', g, 'x', true FROM generate_series(1, $1) g", n)


async def _usage_rows(db: Database) -> int:
    return int(await db.fetchval("t", "SELECT count(*) FROM command_usage"))


async def test_retention_skips_while_another_cluster_holds_the_lock_and_runs_once_per_interval(
        db: Database, database_url: str) -> None:
    await _old_usage(db)
    other = await asyncpg.connect(database_url)  # another cluster, in the middle of its run
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        assert await run_maintenance(db, POLICY, retention_every=HOURLY) is None
        assert await _usage_rows(db) == 3  # nothing happened meanwhile
        await other.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await other.close()
    report = await run_maintenance(db, POLICY, retention_every=HOURLY)
    assert report is not None and report.deleted is not None and report.deleted["command_usage"] == 3
    await _old_usage(db)
    again = await run_maintenance(db, POLICY, retention_every=HOURLY)  # another cluster's tick, minutes later
    assert again is not None and again.deleted is None  # not due: once per interval for the whole bot
    assert await _usage_rows(db) == 3
    due = await run_maintenance(db, POLICY, retention_every=dt.timedelta(0))
    assert due is not None and due.deleted is not None and due.deleted["command_usage"] == 3


class HeldInRetention(Database):
    """A cluster whose retention pauses (holding the lock) until the test lets it go."""

    entered: asyncio.Event
    release: asyncio.Event

    async def execute(self, name: str, sql: Any, *args: Any, **kw: Any) -> str:
        if name == "retention.command_usage" and not self.release.is_set():
            self.entered.set()
            await self.release.wait()
        return await super().execute(name, sql, *args, **kw)


async def test_two_clusters_never_run_it_at_once(db: Database, database_url: str) -> None:
    await _old_usage(db)
    first = HeldInRetention(database_url, min_size=1, max_size=2)
    first.entered, first.release = asyncio.Event(), asyncio.Event()
    await first.connect()
    try:
        running = asyncio.create_task(run_maintenance(first, POLICY, retention_every=HOURLY))
        await first.entered.wait()  # cluster 1 is deleting, holding the lock
        assert await run_maintenance(db, POLICY, retention_every=dt.timedelta(0)) is None  # cluster 2 skips
        first.release.set()
        report = await running
    finally:
        await first.close()
    assert report is not None and report.deleted is not None and report.deleted["command_usage"] == 3


class Availability:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    @property
    def available(self) -> bool:
        return self.event.is_set()

    async def wait_available(self) -> None:
        await self.event.wait()


async def test_the_service_upgrades_old_ciphertexts_once_and_deletes_old_rows(db: Database) -> None:
    rid = await db.fetchval("t", "INSERT INTO reminders (user_id, body, due_at) VALUES (7, $1, now()) RETURNING id",
                            legacy_value("t1", "from before", reminders.BODY_CONTEXT))
    await _old_usage(db)
    state = Availability()
    service = MaintenanceService(db, state, KEYS, POLICY, interval_s=3600)
    assert await service.run_once() is None  # the database is not available yet: nothing is tried
    state.event.set()
    report = await service.run_once()
    assert report is not None and report.upgraded == {"feedback.body": 0, "feedback.resolution": 0,
                                                      "reminders.body": 1}
    assert report.deleted is not None and report.deleted["command_usage"] == 3
    assert (await reminders.get_reminder(db, KEYS, rid)).body == "from before"  # type: ignore[union-attr]
    later = await service.run_once()
    assert later is not None and later.upgraded is None and later.deleted is None  # once since it started; not due


async def test_the_service_runs_by_itself_once_the_database_is_up(db: Database) -> None:
    await _old_usage(db)
    state = Availability()
    service = MaintenanceService(db, state, None, POLICY, interval_s=3600, tick_s=3600)
    await service.start()
    try:
        state.event.set()  # the first run waits for this, then happens at once (the next one is an hour away)

        async def emptied() -> bool:
            return await _usage_rows(db) == 0

        await wait_for(emptied, timeout=30, message="retention run by the service")
    finally:
        await service.stop()
