"""``db.usage.usage_by_day`` (added for /stats) against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.migrate import migrate
from db.pool import Database
from db.usage import UsageRecorder, usage_by_day
from innkeeper.errors import DatabaseError, ErrorCode

pytestmark = pytest.mark.integration

GUILD = 77
NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url)
    async with Database(database_url) as database:
        yield database


async def test_uses_per_day_and_command(db: Database) -> None:
    rec = UsageRecorder(db)
    day = dt.timedelta(days=1)
    for when, command, ok in [(NOW, "ping", True), (NOW, "ping", False), (NOW, "remind", True),
                              (NOW - day, "ping", True), (NOW - 10 * day, "ping", True)]:
        rec.record(user_id=1, command=command, guild_id=GUILD, success=ok, used_at=when)
    rec.record(user_id=1, command="ping", guild_id=GUILD + 1, used_at=NOW)  # another guild
    assert await rec.flush() == 6
    rows = await usage_by_day(db, GUILD, since=NOW - 7 * day)
    assert [(r.day, r.command, r.uses, r.failures) for r in rows] == [
        (NOW.date(), "ping", 2, 1), (NOW.date(), "remind", 1, 0), ((NOW - day).date(), "ping", 1, 0)]
    only = await usage_by_day(db, GUILD, since=NOW - 30 * day, command="ping")
    assert [(r.day, r.uses) for r in only] == [(NOW.date(), 2), ((NOW - day).date(), 1), ((NOW - 10 * day).date(), 1)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=120))
async def test_any_command_filter_is_answered_or_refused_clearly(db: Database, name: str) -> None:
    try:
        rows = await usage_by_day(db, GUILD, since=NOW, command=name)
    except DatabaseError as exc:
        assert exc.code is ErrorCode.DB_BAD_VALUE
    else:
        assert rows == []
