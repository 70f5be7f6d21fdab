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
from innkeeper.errors import DatabaseError
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


async def test_a_claim_is_extended_only_while_it_is_still_the_claimers(db: Database) -> None:
    r = await reminders.create_reminder(db, KEYS, user_id=2, body="hi", due_at=dt.datetime.now(dt.UTC))
    (claim,) = await reminders.claim_due(db, KEYS, "sender", lease=0.3)
    until = claim.claimed_until
    assert await reminders.extend_claim(db, r.id, "sender", lease=30)
    extended = await reminders.get_reminder(db, KEYS, r.id)
    assert extended is not None and extended.claimed_until is not None and until is not None
    assert extended.claimed_until - until > dt.timedelta(seconds=25)
    assert await reminders.claim_due(db, KEYS, "other") == []  # held past the first 0.3 s lease
    assert not await reminders.extend_claim(db, r.id, "other", lease=30)  # not theirs
    # a claim that ran out is still the claimer's until someone claims the reminder
    assert await reminders.extend_claim(db, r.id, "sender", lease=0.2)
    assert await wait_for(lambda: reminders.claim_due(db, KEYS, "other"), timeout=10, message="the lease to end")
    assert not await reminders.extend_claim(db, r.id, "sender", lease=30)  # now it is "other"'s: do not send
    assert await reminders.mark_delivered(db, r.id, "other")
    assert not await reminders.extend_claim(db, r.id, "other", lease=30)  # delivered: nothing to hold
    with pytest.raises(DatabaseError):
        await reminders.extend_claim(db, r.id, "other", lease=0)


async def test_pending_cap_per_user(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from innkeeper.errors import ErrorCode

    monkeypatch.setattr(reminders, "MAX_PER_USER", 2)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    for _ in range(2):
        await reminders.create_reminder(db, KEYS, user_id=3, body="x", due_at=due)
    with pytest.raises(DatabaseError) as info:
        await reminders.create_reminder(db, KEYS, user_id=3, body="x", due_at=due)
    assert info.value.code is ErrorCode.DB_CONSTRAINT


async def test_a_retry_waits_for_its_time_and_an_untried_claim_does_not_count(db: Database) -> None:
    r = await reminders.create_reminder(db, KEYS, user_id=7, body="hi", due_at=dt.datetime.now(dt.UTC))
    (first,) = await reminders.claim_due(db, KEYS, "a")
    assert await reminders.release_claim(db, first.id, "a", retry_in=0.4)
    assert await reminders.claim_due(db, KEYS, "b") == []  # not before its retry time
    (again,) = await wait_for(lambda: reminders.claim_due(db, KEYS, "b"), timeout=10, message="the retry time")
    assert (again.id, again.attempts) == (r.id, 2)
    assert await reminders.release_claim(db, r.id, "b", retry_in=0, attempted=False)
    (third,) = await reminders.claim_due(db, KEYS, "c")
    assert third.attempts == 2  # the untried claim was given back without counting
    assert not await reminders.release_claim(db, r.id, "b")  # "b" holds nothing any more


async def test_an_undeliverable_reminder_is_final_and_its_owner_told_once(db: Database) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    a = await reminders.create_reminder(db, KEYS, user_id=8, body="a", due_at=past, guild_id=1, channel_id=2)
    b = await reminders.create_reminder(db, KEYS, user_id=8, body="b", due_at=past + dt.timedelta(seconds=1))
    claimed = await reminders.claim_due(db, KEYS, "x")
    with pytest.raises(DatabaseError):
        await reminders.mark_failed(db, a.id, "x", "whatever")  # type: ignore[arg-type]
    assert not await reminders.mark_failed(db, a.id, "someone-else", "forbidden")  # not theirs to mark
    assert await reminders.mark_failed(db, a.id, "x", "forbidden")
    assert await reminders.mark_failed(db, b.id, "x", "dm_closed")
    assert [c.id for c in claimed] == [a.id, b.id]
    assert not await reminders.mark_delivered(db, a.id, "x")  # final: not pending any more
    assert await reminders.list_for_user(db, KEYS, 8) == []
    told = await reminders.take_failures(db, 8)
    assert [(t.id, t.failure, t.channel_id) for t in told] == [(a.id, "forbidden", 2), (b.id, "dm_closed", None)]
    assert await reminders.take_failures(db, 8) == []
    # an undeliverable reminder does not hold one of the user's pending slots
    assert await db.fetchval("t", "SELECT count(*) FROM reminders WHERE user_id = 8 AND failed_at IS NULL") == 0


async def test_retention_removes_old_undeliverable_reminders(db: Database) -> None:
    from db import privacy

    old = await reminders.create_reminder(db, KEYS, user_id=9, body="x", due_at=dt.datetime.now(dt.UTC))
    await reminders.claim_due(db, KEYS, "x")
    await reminders.mark_failed(db, old.id, "x", "gone")
    await db.execute("t", "UPDATE reminders SET failed_at = now() - interval '40 days'")
    fresh = await reminders.create_reminder(db, KEYS, user_id=9, body="y", due_at=dt.datetime.now(dt.UTC))
    await privacy.run_retention(db, privacy.RetentionPolicy(reminders_days=30))
    assert await reminders.get_reminder(db, KEYS, old.id) is None
    assert await reminders.get_reminder(db, KEYS, fresh.id) is not None


async def test_a_pending_reminder_with_an_unreadable_text_still_lists(db: Database) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await reminders.create_reminder(db, make_keys("retired"), user_id=10, body="x", due_at=later)
    ok = await reminders.create_reminder(db, KEYS, user_id=10, body="fine", due_at=later + dt.timedelta(minutes=1))
    listed = await reminders.list_for_user(db, KEYS, 10)
    assert [r.body for r in listed] == [None, "fine"] and listed[1].id == ok.id
