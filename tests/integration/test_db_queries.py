"""Every query module against a real PostgreSQL, with hypothesis feeding arbitrary strings to text-storing calls.

Rule checked for each text-storing function: a value is either stored and read back unchanged, or
refused with a clear DatabaseError (DB_BAD_VALUE), never a raw driver error and never a silent change.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db import aliases, audit, error_events, feedback, guilds, permissions, reminders, usage, validate
from db.pool import Database
from db.testing import make_keys, migrated
from innkeeper.errors import DatabaseError, ErrorCode

pytestmark = pytest.mark.integration

KEYS = make_keys()
_ids = itertools.count(1_000_000)

NASTY = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("'\"\\\x00;-%_$\n\t\r é😀\u202e\ufeff"), max_size=40),
    st.builds(lambda ch, n: ch * n, st.characters(), st.integers(1, 6000)),
    st.sampled_from(["", " ", "'; DROP TABLE aliases; --", "$1", "\x00", "a\x00b", "\ud800", "x\udfffy",
                     "Robert'); DELETE FROM guilds;--", "%s %(x)s {0}", "\\x00"]),
)
EXAMPLES = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _refusal_is_justified(value: str, max_len: int, *, min_len: int = 1, spaces_ok: bool = True) -> bool:
    return ("\x00" in value or any("\ud800" <= c <= "\udfff" for c in value) or not min_len <= len(value) <= max_len
            or (not spaces_ok and any(c.isspace() for c in value)))


async def stored_or_refused(store: Callable[[], Awaitable[Any]], read: Callable[[Any], Awaitable[Any]], value: Any,
                            justified: bool) -> None:
    try:
        result = await store()
    except DatabaseError as exc:
        assert exc.code is ErrorCode.DB_BAD_VALUE, exc
        assert exc.user_message and "\x00" not in exc.user_message
        assert justified, f"refused a valid value {value!r}: {exc}"
        return
    assert await read(result) == value


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


# --- guilds --------------------------------------------------------------------------------------------
async def test_guild_settings_defaults_and_updates(db: Database) -> None:
    assert await guilds.get_settings(db, 1) == guilds.GuildSettings(1)
    await guilds.set_prefix(db, 1, "?")
    await guilds.set_feature(db, 1, "music", False)
    await guilds.set_feature(db, 1, "tags", True)
    await guilds.set_log_channel(db, 1, 555)
    await guilds.set_automod_level(db, 1, 2)
    s = await guilds.set_locale(db, 1, "pt-BR")
    assert s == guilds.GuildSettings(1, "?", {"music": False, "tags": True}, 555, 2, "pt-BR")
    assert await guilds.get_settings(db, 1) == s
    assert not s.feature("music") and s.feature("unknown")
    s = await guilds.clear_feature(db, 1, "music")
    assert s.features == {"tags": True} and s.feature("music")
    assert (await guilds.set_prefix(db, 1, None)).prefix is None
    for bad in (lambda: guilds.set_automod_level(db, 1, 4), lambda: guilds.set_locale(db, 1, "english please"),
                lambda: guilds.set_prefix(db, 1, "a b"), lambda: guilds.set_feature(db, 1, "Bad Name", True)):
        with pytest.raises(DatabaseError) as info:
            await bad()
        assert info.value.code is ErrorCode.DB_BAD_VALUE
    await permissions.set_role_level(db, 1, 9, 1)
    await guilds.mark_left(db, 1)
    assert await db.fetchval("t", "SELECT left_at IS NOT NULL FROM guilds WHERE id = 1")
    await guilds.ensure_guild(db, 1)
    assert await db.fetchval("t", "SELECT left_at IS NULL FROM guilds WHERE id = 1")
    assert await guilds.delete_guild(db, 1)
    assert await guilds.get_settings(db, 1) == guilds.GuildSettings(1)
    assert await permissions.get_role_levels(db, 1) == {}  # cascaded


@EXAMPLES
@given(prefix=NASTY)
async def test_prefix_strings(db: Database, prefix: str) -> None:
    gid = next(_ids)

    async def read(_: object) -> str | None:
        return (await guilds.get_settings(db, gid)).prefix

    await stored_or_refused(lambda: guilds.set_prefix(db, gid, prefix), read, prefix,
                            _refusal_is_justified(prefix, validate.MAX_PREFIX, spaces_ok=False))


@EXAMPLES
@given(name=NASTY, locale=NASTY)
async def test_feature_and_locale_strings(db: Database, name: str, locale: str) -> None:
    gid = next(_ids)
    try:
        s = await guilds.set_feature(db, gid, name, True)
    except DatabaseError as exc:
        assert exc.code is ErrorCode.DB_BAD_VALUE
    else:
        assert (await guilds.get_settings(db, gid)).features == {name: True} == s.features
    try:
        await guilds.set_locale(db, gid, locale)
    except DatabaseError as exc:
        assert exc.code is ErrorCode.DB_BAD_VALUE
    else:
        assert (await guilds.get_settings(db, gid)).locale == locale


# --- permissions ------------------------------------------------------------------------------------------
async def test_role_levels_and_overrides(db: Database) -> None:
    await permissions.set_role_level(db, 1, 10, permissions.PermissionLevel.MOD)
    await permissions.set_role_level(db, 1, 11, permissions.PermissionLevel.ADMIN)
    await permissions.set_role_level(db, 2, 12, permissions.PermissionLevel.OWNER)
    assert await permissions.get_role_levels(db, 1) == {10: 1, 11: 2}
    assert await permissions.level_for_roles(db, 1, [10, 11, 99]) == 2
    assert await permissions.level_for_roles(db, 1, [12]) == 0  # another guild's role
    assert await permissions.level_for_roles(db, 1, []) == 0
    await permissions.set_role_level(db, 1, 11, 0)  # back to everyone = no grant
    assert await permissions.get_role_levels(db, 1) == {10: 1}
    assert not await permissions.remove_role_level(db, 1, 11)
    o = await permissions.set_command_override(db, 1, "ban", min_level=2)
    assert o == permissions.CommandOverride(1, "ban", 2, True)
    await permissions.set_command_override(db, 1, "fun", enabled=False)
    assert [x.command for x in await permissions.list_command_overrides(db, 1)] == ["ban", "fun"]
    assert await permissions.get_command_override(db, 1, "fun") == permissions.CommandOverride(1, "fun", None, False)
    assert await permissions.clear_command_override(db, 1, "fun")
    assert await permissions.get_command_override(db, 1, "fun") is None
    with pytest.raises(DatabaseError):
        await permissions.set_role_level(db, 1, 10, 7)


@EXAMPLES
@given(command=NASTY)
async def test_override_command_strings(db: Database, command: str) -> None:
    gid = next(_ids)

    async def read(_: object) -> str | None:
        o = await permissions.get_command_override(db, gid, command)
        return None if o is None else o.command

    await stored_or_refused(lambda: permissions.set_command_override(db, gid, command, min_level=1), read, command,
                            _refusal_is_justified(command, validate.MAX_COMMAND_NAME))


# --- aliases -------------------------------------------------------------------------------------------------
async def test_aliases_scopes_and_uniqueness(db: Database) -> None:
    await aliases.create_alias(db, "guild", 1, "b", "ban --days 1", created_by=5)
    await aliases.create_alias(db, "user", 5, "b", "balance", created_by=5)
    await aliases.create_alias(db, "guild", 1, "k", "kick", created_by=6)
    r = await aliases.resolve_alias(db, 1, 5, "b")
    assert r is not None and (r.scope, r.command) == ("user", "balance")  # the user's own alias wins
    r = await aliases.resolve_alias(db, 1, 6, "b")
    assert r is not None and (r.scope, r.command) == ("guild", "ban --days 1")
    assert await aliases.resolve_alias(db, 2, 6, "b") is None
    assert [a.name for a in await aliases.list_aliases(db, "guild", 1)] == ["b", "k"]
    with pytest.raises(DatabaseError) as info:
        await aliases.create_alias(db, "guild", 1, "b", "other", created_by=7)
    assert info.value.code is ErrorCode.DB_CONSTRAINT and "already exists" in info.value.user_message
    assert await aliases.delete_alias(db, "guild", 1, "b")
    assert not await aliases.delete_alias(db, "guild", 1, "b")
    assert await aliases.get_alias(db, "guild", 1, "b") is None


async def test_alias_cap_per_scope(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aliases, "MAX_ALIASES_PER_SCOPE", 3)
    for i in range(3):
        await aliases.create_alias(db, "user", 9, f"a{i}", "x", created_by=9)
    with pytest.raises(DatabaseError) as info:
        await aliases.create_alias(db, "user", 9, "a3", "x", created_by=9)
    assert info.value.code is ErrorCode.DB_CONSTRAINT and "at most 3" in info.value.user_message


@EXAMPLES
@given(name=NASTY, command=NASTY)
async def test_alias_strings(db: Database, name: str, command: str) -> None:
    sid = next(_ids)
    justified = (_refusal_is_justified(name, validate.MAX_ALIAS_NAME, spaces_ok=False)
                 or _refusal_is_justified(command, validate.MAX_ALIAS_COMMAND))

    async def read(_: object) -> tuple[str, str] | None:
        a = await aliases.get_alias(db, "guild", sid, name)
        return None if a is None else (a.name, a.command)

    await stored_or_refused(lambda: aliases.create_alias(db, "guild", sid, name, command, created_by=1), read,
                            (name, command), justified)


# --- feedback ------------------------------------------------------------------------------------------------
async def test_feedback_workflow(db: Database) -> None:
    a = await feedback.submit_feedback(db, KEYS, author_id=5, body="please add dice", guild_id=1, channel_id=2)
    b = await feedback.submit_feedback(db, KEYS, author_id=6, body="bug", guild_id=1)
    assert a.status == "open" and a.body == "please add dice"
    raw = await db.fetchval("t", "SELECT body FROM feedback WHERE id = $1", a.id)
    assert raw.startswith("v2:t1:") and "dice" not in raw  # encrypted at rest, bound to its row
    a = await feedback.acknowledge(db, KEYS, a.id, by=99)
    assert (a.status, a.acknowledged_by) == ("acknowledged", 99) and a.acknowledged_at is not None
    a = await feedback.close(db, KEYS, a.id, "resolved", by=98, resolution="added /roll")
    assert (a.status, a.closed_by, a.resolution) == ("resolved", 98, "added /roll") and a.closed_at is not None
    b = await feedback.close(db, KEYS, b.id, "rejected", by=98)  # open may close directly
    assert b.status == "rejected" and b.resolution is None
    with pytest.raises(DatabaseError) as info:
        await feedback.acknowledge(db, KEYS, a.id, by=99)
    assert info.value.code is ErrorCode.DB_CONSTRAINT and "already resolved" in info.value.user_message
    with pytest.raises(DatabaseError) as info:
        await feedback.close(db, KEYS, 12345, "resolved", by=1)
    assert info.value.code is ErrorCode.NOT_FOUND
    assert [f.id for f in await feedback.list_feedback(db, KEYS, guild_id=1)] == [b.id, a.id]
    assert [f.id for f in await feedback.list_feedback(db, KEYS, statuses=("resolved",))] == [a.id]
    assert [f.id for f in await feedback.list_feedback(db, KEYS, author_id=6)] == [b.id]
    assert [f.id for f in await feedback.list_feedback(db, KEYS, before_id=b.id)] == [a.id]
    assert await feedback.get_feedback(db, KEYS, a.id) == a


async def test_concurrent_moderators_cannot_both_acknowledge(db: Database) -> None:
    import asyncio

    f = await feedback.submit_feedback(db, KEYS, author_id=5, body="x")
    results = await asyncio.gather(*(feedback.acknowledge(db, KEYS, f.id, by=m) for m in (1, 2, 3)),
                                   return_exceptions=True)
    assert sum(isinstance(r, feedback.Feedback) for r in results) == 1
    assert all(isinstance(r, DatabaseError) and r.code is ErrorCode.DB_CONSTRAINT
               for r in results if not isinstance(r, feedback.Feedback))


@EXAMPLES
@given(body=NASTY, note=NASTY)
async def test_feedback_strings(db: Database, body: str, note: str) -> None:
    async def read(f: feedback.Feedback) -> str:
        got = await feedback.get_feedback(db, KEYS, f.id)
        assert got is not None
        return got.body

    await stored_or_refused(lambda: feedback.submit_feedback(db, KEYS, author_id=1, body=body), read, body,
                            _refusal_is_justified(body, validate.MAX_FEEDBACK))
    f = await feedback.submit_feedback(db, KEYS, author_id=1, body="x")

    async def read_note(f: feedback.Feedback) -> str | None:
        got = await feedback.get_feedback(db, KEYS, f.id)
        assert got is not None
        return got.resolution

    await stored_or_refused(lambda: feedback.close(db, KEYS, f.id, "resolved", by=2, resolution=note), read_note,
                            note, _refusal_is_justified(note, feedback.MAX_RESOLUTION))


# --- audit ---------------------------------------------------------------------------------------------------
async def test_audit_append_recent_and_chain(db: Database) -> None:
    e1 = await audit.append(db, "member.ban", guild_id=1, actor_id=7, target_id=8, target="user 8",
                            details={"reason": "spam", "days": 1})
    e2 = await audit.append(db, "member.kick", guild_id=1, actor_id=7, target_id=9)
    e3 = await audit.append(db, "bot.start")
    assert [e.id for e in await audit.recent(db, 1)] == [e2.id, e1.id]
    assert [e.id for e in await audit.recent(db, None)] == [e3.id]
    assert [e.id for e in await audit.recent(db, 1, before_id=e2.id)] == [e1.id]
    assert e1.details == {"reason": "spam", "days": 1}
    rows = await db.fetch("t", "SELECT id, prev_hash, hash FROM audit_log WHERE chain_id = 1 ORDER BY id")
    assert bytes(rows[0]["prev_hash"]) == audit.GENESIS and rows[1]["prev_hash"] == rows[0]["hash"]
    assert [e.id for e in await audit.for_user(db, 8)] == [e1.id]
    result = await audit.verify(db)
    assert result.ok and result.rows == 3 and result.chains == 2
    assert result.heads[1] == bytes(rows[1]["hash"]).hex()


async def test_audit_chain_survives_concurrent_appends(db: Database) -> None:
    import asyncio

    await asyncio.gather(*(audit.append(db, "x", guild_id=g, actor_id=i) for i in range(40) for g in (1, 2)))
    result = await audit.verify(db)
    assert result.ok, result.problems
    assert result.rows == 80


@EXAMPLES
@given(action=NASTY, target=NASTY, detail=NASTY)
async def test_audit_strings(db: Database, action: str, target: str, detail: str) -> None:
    justified = (_refusal_is_justified(action, validate.MAX_ACTION)
                 or _refusal_is_justified(target, validate.MAX_TARGET, min_len=0)
                 or _refusal_is_justified(detail, 256, min_len=0))  # also a key: keys are at most 256

    async def read(e: audit.AuditEntry) -> tuple[str, str | None, Any]:
        got = [x for x in await audit.recent(db, 77, limit=500) if x.id == e.id][0]
        return got.action, got.target, got.details

    await stored_or_refused(lambda: audit.append(db, action, guild_id=77, target=target, details={detail: [detail]}),
                            read, (action, target, {detail: [detail]}), justified)
    assert (await audit.verify(db, guild_id=77, all_chains=False)).ok


# --- reminders -----------------------------------------------------------------------------------------------
async def test_reminders_lifecycle(db: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    due = await reminders.create_reminder(db, KEYS, user_id=5, body="stretch", due_at=now - dt.timedelta(seconds=1))
    later = await reminders.create_reminder(db, KEYS, user_id=5, body="sleep", due_at=now + dt.timedelta(hours=1))
    assert [r.id for r in await reminders.list_for_user(db, KEYS, 5)] == [due.id, later.id]
    assert await reminders.next_due(db) == due.due_at
    claimed = await reminders.claim_due(db, KEYS, "cluster-0")
    assert [(r.id, r.body, r.claimed_by, r.attempts) for r in claimed] == [(due.id, "stretch", "cluster-0", 1)]
    assert await reminders.claim_due(db, KEYS, "cluster-1") == []  # held by cluster-0
    assert not await reminders.mark_delivered(db, due.id, "cluster-1")  # not the claimer
    assert await reminders.mark_delivered(db, due.id, "cluster-0")
    assert not await reminders.mark_delivered(db, due.id, "cluster-0")  # exactly once
    assert [r.id for r in await reminders.list_for_user(db, KEYS, 5)] == [later.id]
    assert not await reminders.cancel_reminder(db, 6, later.id)  # someone else's
    assert await reminders.cancel_reminder(db, 5, later.id)
    assert await reminders.next_due(db) is None
    for bad in (dt.datetime(2030, 1, 1), now + dt.timedelta(days=5 * 365)):
        with pytest.raises(DatabaseError):
            await reminders.create_reminder(db, KEYS, user_id=5, body="x", due_at=bad)


async def test_released_claim_is_claimable_again(db: Database) -> None:
    r = await reminders.create_reminder(db, KEYS, user_id=5, body="x", due_at=dt.datetime.now(dt.UTC))
    assert [c.id for c in await reminders.claim_due(db, KEYS, "a")] == [r.id]
    assert await reminders.release_claim(db, r.id, "a")
    again = await reminders.claim_due(db, KEYS, "b")
    assert [(c.id, c.claimed_by, c.attempts) for c in again] == [(r.id, "b", 2)]


@EXAMPLES
@given(body=NASTY)
async def test_reminder_strings(db: Database, body: str) -> None:
    async def read(r: reminders.Reminder) -> str:
        got = await reminders.get_reminder(db, KEYS, r.id)
        assert got is not None
        return got.body

    await stored_or_refused(
        lambda: reminders.create_reminder(db, KEYS, user_id=next(_ids), body=body,
                                          due_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)),
        read, body, _refusal_is_justified(body, validate.MAX_REMINDER))


# --- error events ----------------------------------------------------------------------------------------------
async def test_error_events_record_and_list(db: Database) -> None:
    e = await error_events.record_error(db, code="E5006", message="boom", command="roll", guild_id=1, user_id=5,
                                      cluster_id=0, shard_id=3, context={"trace": "x"})
    await error_events.record_error(db, code="E4001", message="db down", guild_id=2)
    assert e.context == {"trace": "x"}
    assert [x.code for x in await error_events.list_errors(db)] == ["E4001", "E5006"]
    assert [x.id for x in await error_events.list_errors(db, code="E5006", guild_id=1)] == [e.id]
    assert await error_events.list_errors(db, since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == []


@EXAMPLES
@given(message=NASTY, key=NASTY)
async def test_error_event_strings_are_stored_or_visibly_sanitized(db: Database, message: str, key: str) -> None:
    e = await error_events.record_error(db, code="E9999", message=message, context={key: message})
    got = [x for x in await error_events.list_errors(db, limit=500) if x.id == e.id][0]
    clean = validate.sanitize(message, validate.MAX_ERROR_MESSAGE)
    assert got.message == clean
    changed = clean != message or validate.sanitize(key, 256) != key or validate.sanitize(message, 4000) != message
    assert got.context.get("sanitized", False) is changed
    if not changed:
        assert got.context == {key: message}


# --- command usage ---------------------------------------------------------------------------------------------
async def test_usage_flushes_in_one_statement(db: Database) -> None:
    from prometheus_client import REGISTRY

    rec = usage.UsageRecorder(db, interval=3600)
    for i in range(250):
        rec.record(user_id=i % 7, command=f"cmd{i % 3}", guild_id=1, channel_id=2, latency_ms=1.5, shard_id=0)
    before = REGISTRY.get_sample_value("innkeeper_db_query_seconds_count", {"query": "command_usage.insert_batch"}) or 0
    assert await rec.flush() == 250
    after = REGISTRY.get_sample_value("innkeeper_db_query_seconds_count", {"query": "command_usage.insert_batch"})
    assert after == before + 1  # one statement for all 250 rows
    assert len(rec) == 0 and await db.fetchval("t", "SELECT count(*) FROM command_usage") == 250
    top = await usage.top_commands(db, 1, since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert [(u.command, u.uses) for u in top] == [("cmd0", 84), ("cmd1", 83), ("cmd2", 83)]


async def test_usage_failed_flush_keeps_rows_and_close_writes_them(db: Database, database_url: str) -> None:
    rec = usage.UsageRecorder(db, interval=3600)
    for i in range(10):
        rec.record(user_id=i, command="ping")
    await db.execute("t", "ALTER TABLE command_usage RENAME TO command_usage_away")
    with pytest.raises(DatabaseError):
        await rec.flush()
    assert len(rec) == 10  # kept for the next try
    rec.record(user_id=99, command="late")
    await db.execute("t", "ALTER TABLE command_usage_away RENAME TO command_usage")
    await rec.close()  # a clean shutdown writes everything
    rows = await db.fetch("t", "SELECT user_id, command FROM command_usage ORDER BY id")
    assert [(r["user_id"], r["command"]) for r in rows] == [(i, "ping") for i in range(10)] + [(99, "late")]
    with pytest.raises(DatabaseError):
        rec.record(user_id=1, command="after close")


async def test_usage_buffer_is_bounded_and_counts_drops(db: Database) -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("innkeeper_db_usage_dropped_total") or 0
    rec = usage.UsageRecorder(db, max_buffer=5)
    for i in range(8):
        rec.record(user_id=i, command="x")
    assert len(rec) == 5 and rec.dropped == 3
    assert REGISTRY.get_sample_value("innkeeper_db_usage_dropped_total") == before + 3
    await rec.flush()
    assert [r["user_id"] for r in await db.fetch("t", "SELECT user_id FROM command_usage ORDER BY id")] == [3, 4, 5, 6,
                                                                                                           7]


async def test_usage_periodic_flush(db: Database) -> None:
    from tests.support import wait_for

    async with usage.UsageRecorder(db, interval=0.05) as rec:
        rec.record(user_id=1, command="ping")
        await wait_for(lambda: db.fetchval("t", "SELECT count(*) = 1 FROM command_usage"), message="periodic flush")
        rec.record(user_id=2, command="ping")
    assert await db.fetchval("t", "SELECT count(*) FROM command_usage") == 2


@EXAMPLES
@given(command=NASTY)
async def test_usage_command_strings(db: Database, command: str) -> None:
    rec = usage.UsageRecorder(db)
    uid = next(_ids)
    try:
        rec.record(user_id=uid, command=command)
    except DatabaseError as exc:
        assert exc.code is ErrorCode.DB_BAD_VALUE
        assert _refusal_is_justified(command, validate.MAX_COMMAND_NAME)
        assert len(rec) == 0  # a bad row never enters the buffer
        return
    await rec.close()
    assert await db.fetchval("t", "SELECT command FROM command_usage WHERE user_id = $1", uid) == command


async def test_usage_by_day(db: Database) -> None:
    rec = usage.UsageRecorder(db)
    today = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - dt.timedelta(days=1)
    for when, command, ok in [(today, "roll", True), (today, "roll", False), (today, "ping", True),
                              (yesterday, "roll", True), (today - dt.timedelta(days=40), "roll", True)]:
        rec.record(user_id=1, command=command, guild_id=7, success=ok, used_at=when)
    rec.record(user_id=1, command="roll", guild_id=8, used_at=today)  # another guild
    await rec.close()
    rows = await usage.usage_by_day(db, 7, since=today - dt.timedelta(days=30))
    assert [(r.day, r.command, r.uses, r.failures) for r in rows] == [
        (today.date(), "roll", 2, 1), (today.date(), "ping", 1, 0), (yesterday.date(), "roll", 1, 0)]
    only = await usage.usage_by_day(db, 7, since=today - dt.timedelta(days=30), command="ping")
    assert [(r.command, r.uses) for r in only] == [("ping", 1)]
    with pytest.raises(DatabaseError):
        await usage.usage_by_day(db, 7, since=today, command="a\x00b")
