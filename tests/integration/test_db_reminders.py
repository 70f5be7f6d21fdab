"""Reminder claims across clusters: never the same row twice, expired claims come back."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from db import reminders
from db.crypto import row_binding
from db.pool import Database
from db.testing import make_keys, migrated
from tests.support import wait_for

pytestmark = pytest.mark.integration
KEYS = make_keys()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


async def test_concurrent_claimers_never_share_a_row(db: Database, database_url: str) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await db.executemany("t", "INSERT INTO reminders (id, user_id, body, due_at) VALUES ($1, $2, $3, $4)",
                         [(g, g, KEYS.encrypt("due", context=reminders.BODY_CONTEXT, row=row_binding(g, g)), past)
                          for g in range(1, 301)])
    claimed: dict[str, list[int]] = {}
    pools = [await Database(database_url, min_size=2, max_size=2).connect() for _ in range(4)]  # one per "process"

    async def cluster(name: str, own: Database) -> None:
        mine = claimed.setdefault(name, [])
        while batch := await reminders.claim_due(own, KEYS, name, limit=7):
            mine.extend(r.id for r in batch)
            for r in batch:
                assert await reminders.mark_delivered(own, r.id, name)

    try:
        await asyncio.gather(*(cluster(f"cluster-{i}", own) for i, own in enumerate(pools)))
    finally:
        for own in pools:
            await own.close()
    ids = [i for batch in claimed.values() for i in batch]
    assert len(ids) == len(set(ids)) == 300  # every reminder exactly once
    assert sum(1 for batch in claimed.values() if batch) >= 2  # the work really was shared
    assert await db.fetchval("t", "SELECT count(*) FROM reminders WHERE delivered_at IS NULL") == 0
    assert await db.fetchval("t", "SELECT max(attempts) FROM reminders") == 1


async def test_an_expired_claim_is_claimable_again(db: Database) -> None:
    r = await reminders.create_reminder(db, KEYS, user_id=1, body="hi", due_at=dt.datetime.now(dt.UTC))
    assert [c.id for c in await reminders.claim_due(db, KEYS, "dead-cluster", lease=0.3)] == [r.id]
    assert await reminders.claim_due(db, KEYS, "live-cluster") == []  # still leased
    again = await wait_for(lambda: reminders.claim_due(db, KEYS, "live-cluster"), timeout=10,
                           message="the lease to expire")
    assert [(c.id, c.claimed_by, c.attempts) for c in again] == [(r.id, "live-cluster", 2)]
    assert not await reminders.mark_delivered(db, r.id, "dead-cluster")  # the old claimer lost it
    assert await reminders.mark_delivered(db, r.id, "live-cluster")


async def test_pending_cap_per_user(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from innkeeper.errors import DatabaseError, ErrorCode

    monkeypatch.setattr(reminders, "MAX_PER_USER", 2)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    for _ in range(2):
        await reminders.create_reminder(db, KEYS, user_id=3, body="x", due_at=due)
    with pytest.raises(DatabaseError) as info:
        await reminders.create_reminder(db, KEYS, user_id=3, body="x", due_at=due)
    assert info.value.code is ErrorCode.DB_CONSTRAINT
