"""Privacy primitives: export, erasure with a verifiable audit chain, tamper detection, retention, key rotation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from db import aliases, audit, feedback, guilds, privacy, reminders
from db.crypto import generate_key, row_binding
from db.error_events import record_error
from db.pool import Database
from db.pseudonyms import Pseudonyms
from db.testing import legacy_value, make_keys, migrated
from db.usage import UsageRecorder
from innkeeper.errors import ConfigError, DatabaseError, ErrorCode
from innkeeper.settings import PROJECT_ROOT, Settings
from tests.procs import cli_env
from tests.support import INNKEEPER_CLI

pytestmark = pytest.mark.integration
KEYS = make_keys()
PSEUDONYM_KEY = "pk1=" + "S" * 43 + "="  # a fixed 32-byte key for the audit log's pseudonyms
PSEUDONYMS = Pseudonyms.from_settings(Settings(pseudonym_key=PSEUDONYM_KEY), None)
USER = 331234567890123456  # a realistic snowflake
OTHER = 441234567890123456
MOD = 551234567890123456


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


async def _fill(db: Database) -> None:
    await guilds.set_prefix(db, 1, "?")
    await aliases.create_alias(db, "user", USER, "b", "balance", created_by=USER)
    await aliases.create_alias(db, "guild", 1, "g", "greet", created_by=USER)
    await aliases.create_alias(db, "user", OTHER, "o", "other", created_by=OTHER)
    mine = await feedback.submit_feedback(db, KEYS, author_id=USER, body="my secret idea", guild_id=1)
    theirs = await feedback.submit_feedback(db, KEYS, author_id=OTHER, body="their idea", guild_id=1)
    await feedback.acknowledge(db, KEYS, theirs.id, by=USER)  # the user is also a moderator
    await feedback.close(db, KEYS, mine.id, "resolved", by=MOD, resolution="thanks")
    await audit.append(db, "member.ban", guild_id=1, actor_id=MOD, target_id=USER, target=f"user {USER}",
                       details={"reason": "spam"})
    await audit.append(db, "member.warn", guild_id=1, actor_id=MOD, target_id=OTHER, details={"reason": "x"})
    await audit.append(db, "role.grant", guild_id=2, actor_id=USER, target_id=OTHER)
    await audit.append(db, "note", guild_id=2, actor_id=MOD, details={"text": f"warned <@{USER}> twice", "n": 1})
    await audit.append(db, "member.kick", guild_id=1, actor_id=MOD, target_id=OTHER)
    await reminders.create_reminder(db, KEYS, user_id=USER, body="buy milk", due_at=dt.datetime.now(dt.UTC))
    await reminders.create_reminder(db, KEYS, user_id=OTHER, body="call mom", due_at=dt.datetime.now(dt.UTC))
    await record_error(db, code="E5006", message="failed for user", user_id=USER)
    await record_error(db, code="E5006", message="failed for other", user_id=OTHER)
    rec = UsageRecorder(db)
    for uid in (USER, USER, OTHER):
        rec.record(user_id=uid, command="ping", guild_id=1)
    await rec.close()


async def legacy_audit_row(db: Database, action: str, *, guild_id: int, actor_id: int | None = None,
                           target_id: int | None = None, details: Any = None) -> int:
    """A row as audit_append wrote it before V6 (scheme 1: one hash over every personal field)."""
    return int(await db.fetchval("t", "SELECT id FROM audit_append($1, $2, $3, $4, NULL, $5)", guild_id, actor_id,
                                 action, target_id, details))


async def _rows_mentioning(db: Database, needle: int) -> dict[str, int]:
    tables = [r["tablename"] for r in await db.fetch(
        "t", "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")]
    found = {}
    for t in tables:
        n = await db.fetchval("t", f'SELECT count(*) FROM "{t}" AS x WHERE strpos(x::text, $1) > 0', str(needle))
        if n:
            found[t] = n
    return found


async def test_export_has_every_row_about_the_user(db: Database) -> None:
    await _fill(db)
    data = await privacy.export_user(db, KEYS, USER)
    json.dumps(data)  # JSON-ready
    assert data["user_id"] == str(USER)
    assert sorted(a["name"] for a in data["aliases"]) == ["b", "g"]
    assert sorted(f["body"] for f in data["feedback"]) == ["my secret idea", "their idea"]  # authored + moderated
    assert [r["body"] for r in data["reminders"]] == ["buy milk"]
    assert [e["message"] for e in data["error_events"]] == ["failed for user"]
    assert len(data["command_usage"]) == 2
    # as actor, as target, and the moderator's note that names them only in its details
    assert sorted(e["action"] for e in data["audit_log"]) == ["member.ban", "note", "role.grant"]
    assert all(isinstance(a["scope_id"], str) for a in data["aliases"])  # ids as strings
    assert "their idea" not in json.dumps(await privacy.export_user(db, KEYS, MOD + 1))


async def test_erasure_removes_the_user_and_keeps_the_log_accountable(db: Database) -> None:
    await _fill(db)
    assert await _rows_mentioning(db, USER)  # sanity: the needle is findable
    other_before = await privacy.export_user(db, KEYS, OTHER)
    counts = await privacy.erase_user(db, USER, pseudonyms=PSEUDONYMS)
    assert counts["audit_log"] == 2 and counts["feedback"] == 1 and counts["command_usage"] == 2
    # what is left: the moderator's note that names the user in its own words, and the erasure record
    # (kept a week, so usage rows still buffered somewhere are dropped when they arrive)
    assert await _rows_mentioning(db, USER) == {"audit_log": 1, "erased_users": 1}
    mentioned = await db.fetchval("t", "SELECT action FROM audit_log WHERE strpos(details::text, $1) > 0", str(USER))
    assert mentioned == "note"
    result = await audit.verify(db)
    assert result.ok, [str(p) for p in result.problems]
    rows = {r["action"]: r for r in await db.fetch("t", "SELECT * FROM audit_log WHERE redacted_at IS NOT NULL")}
    assert set(rows) == {"member.ban", "role.grant"}
    ban = rows["member.ban"]  # the user was banned: the moderator who did it stays on record
    assert (ban["actor_id"], ban["target_id"], ban["target"], ban["details"]) == (MOD, None, None, {"reason": "spam"})
    assert ban["target_pseudonym"] == PSEUDONYMS.of(USER) and ban["actor_pseudonym"] is None
    grant = rows["role.grant"]  # the user acted: the act stays, done by their pseudonym
    assert (grant["actor_id"], grant["target_id"]) == (None, OTHER)
    assert grant["actor_pseudonym"] == PSEUDONYMS.of(USER)
    markers = await db.fetch("t", "SELECT guild_id, details FROM audit_log WHERE action = $1 ORDER BY guild_id",
                             audit.REDACT_ACTION)
    assert [m["guild_id"] for m in markers] == [1, 2]
    assert markers[0]["details"]["pseudonyms"] == {str(ban["id"]): {"target": PSEUDONYMS.of(USER)}}
    # Everyone else's data is untouched (ids are compared; the moderator reference was anonymised).
    after = await privacy.export_user(db, KEYS, OTHER)
    for section in ("aliases", "reminders", "error_events", "command_usage"):
        assert after[section] == other_before[section]
    assert [f["acknowledged_by"] for f in after["feedback"]] == [None]
    empty = await privacy.export_user(db, KEYS, USER)
    assert all(empty[k] == [] for k in ("aliases", "feedback", "reminders", "error_events", "command_usage"))
    assert [e["action"] for e in empty["audit_log"]] == ["note"]


async def test_a_rogue_admin_who_erases_themselves_stays_one_person_in_the_log(db: Database) -> None:
    admin = 661234567890123456
    a = await audit.append(db, "role.grant", guild_id=1, actor_id=admin, target_id=admin, details={"role": "admin"})
    b = await audit.append(db, "member.ban", guild_id=1, actor_id=admin, target_id=OTHER, target="a rival",
                           details={"reason": "none given"})
    c = await audit.append(db, "settings.set", guild_id=2, actor_id=admin, details={"key": "log_channel"})
    d = await audit.append(db, "member.warn", guild_id=1, actor_id=MOD, target_id=admin)  # the admin was warned
    other = await audit.append(db, "member.kick", guild_id=1, actor_id=MOD, target_id=OTHER)
    await privacy.erase_user(db, admin, pseudonyms=PSEUDONYMS)
    result = await audit.verify(db)  # what `/audit verify` and `innkeeper audit-verify` run
    assert result.ok, [str(p) for p in result.problems]
    after = {e.id: e for e in await audit.recent(db, 1) + await audit.recent(db, 2)}
    p = PSEUDONYMS.of(admin)
    assert p.startswith("psn:pk1:") and p != PSEUDONYMS.of(OTHER) and str(admin) not in p
    # A and B (and C, in another guild) were done by the same person, whose id is gone
    assert [after[i].actor_pseudonym for i in (a.id, b.id, c.id)] == [p, p, p]
    assert all(after[i].actor_id is None for i in (a.id, b.id, c.id))
    assert after[a.id].target_pseudonym == p and after[d.id].target_pseudonym == p  # acting on themselves, warned
    # what they did stays verifiable and readable: the action, the other person, the details
    assert (after[b.id].action, after[b.id].target_id, after[b.id].target, after[b.id].details) == \
        ("member.ban", OTHER, "a rival", {"reason": "none given"})
    assert after[d.id].actor_id == MOD  # the moderator who warned them is not erased with them
    assert after[other.id].actor_pseudonym is None and not after[other.id].redacted
    # erasing again later (they came back and acted once more) links up with the same pseudonym
    e = await audit.append(db, "role.grant", guild_id=2, actor_id=admin, target_id=OTHER)
    await privacy.erase_user(db, admin, pseudonyms=PSEUDONYMS)
    assert (await audit.recent(db, 2, limit=2))[1].actor_pseudonym == p
    assert e.id in {x.id for x in await audit.recent(db, 2)}
    assert (await audit.verify(db)).ok


async def test_rows_from_before_v6_are_cleared_with_both_people_pseudonymised(db: Database) -> None:
    legacy = await legacy_audit_row(db, "member.ban", guild_id=1, actor_id=MOD, target_id=USER,
                                    details={"reason": "spam"})
    await audit.append(db, "member.warn", guild_id=1, actor_id=MOD, target_id=OTHER)
    await privacy.erase_user(db, USER, pseudonyms=PSEUDONYMS)
    assert (await audit.verify(db)).ok
    row = await db.fetchrow("t", "SELECT * FROM audit_log WHERE id = $1", legacy)
    assert row["scheme"] == 1 and row["redacted_at"] is not None
    # its one content hash would let anyone test guesses of the erased id against what is left: all of it goes,
    # and the moderator stays on record as a pseudonym operators can resolve
    assert (row["actor_id"], row["target_id"], row["details"]) == (None, None, None)
    assert (row["actor_pseudonym"], row["target_pseudonym"]) == (PSEUDONYMS.of(MOD), PSEUDONYMS.of(USER))
    await db.execute("tamper", "UPDATE audit_log SET actor_pseudonym = $1 WHERE id = $2", PSEUDONYMS.of(OTHER), legacy)
    problems = (await audit.verify(db)).problems
    assert [(p.row_id, p.reason) for p in problems] == [
        (legacy, "the actor's pseudonym is not the one the privacy.redact entry records")]


async def test_erasure_is_all_or_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await _fill(db)
    before = await _rows_mentioning(db, USER)

    async def broken(*args: object, **kwargs: object) -> int:
        raise DatabaseError("simulated failure")

    monkeypatch.setattr(audit, "redact_user", broken)
    with pytest.raises(DatabaseError):
        await privacy.erase_user(db, USER, pseudonyms=PSEUDONYMS)
    assert await _rows_mentioning(db, USER) == before


async def test_usage_buffered_in_other_clusters_is_dropped_by_the_erasure(db: Database) -> None:
    cluster_a, cluster_b = UsageRecorder(db), UsageRecorder(db)  # two clusters' buffers, neither flushed
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    for recorder in (cluster_a, cluster_b):
        recorder.record(user_id=USER, command="ping", guild_id=1, used_at=earlier)
        recorder.record(user_id=OTHER, command="ping", guild_id=1, used_at=earlier)
    await privacy.erase_user(db, USER, pseudonyms=PSEUDONYMS)  # from cluster A, B, or the CLI: nobody flushed first
    erased_at = await db.fetchval("t", "SELECT erased_at FROM erased_users WHERE user_id = $1", USER)
    cluster_b.record(user_id=USER, command="help", guild_id=1, used_at=erased_at + dt.timedelta(seconds=1))
    assert await cluster_a.flush() == 1 and await cluster_b.flush() == 2  # OTHER's rows, and USER's later use
    rows = await db.fetch("t", "SELECT user_id, command FROM command_usage ORDER BY id")
    assert [(r["user_id"], r["command"]) for r in rows] == [(OTHER, "ping"), (OTHER, "ping"), (USER, "help")]
    # a week later the erasure is forgotten by retention
    deleted = await privacy.run_retention(db, privacy.RetentionPolicy(), now=erased_at + dt.timedelta(days=8))
    assert deleted["erased_users"] == 1


async def test_erasure_needs_a_pseudonym_key(db: Database) -> None:
    with pytest.raises(ConfigError) as info:
        Pseudonyms.from_settings(Settings(), None)
    assert info.value.context["variable"] == "INNKEEPER_PSEUDONYM_KEY"
    derived = Pseudonyms.from_settings(Settings(), make_keys("k1"))  # derived from the encryption key ring
    assert derived.of(USER).startswith("psn:enc-k1:") and derived.of(USER) != PSEUDONYMS.of(USER)
    assert Pseudonyms.from_settings(Settings(pseudonym_key=PSEUDONYM_KEY), make_keys("k1")).of(USER) == \
        PSEUDONYMS.of(USER)  # the dedicated key wins, and does not change when encryption keys rotate


# Rows 1-5 of chain 1 and 2 come from _fill; erasing USER touches row 1 (target) and row 3 (actor, chain 2).
@pytest.mark.parametrize("tamper, reason, row", [
    ("UPDATE audit_log SET details = '{\"reason\": \"nothing\"}' WHERE id = 2", "content does not match", 2),
    ("UPDATE audit_log SET action = 'member.unban' WHERE id = 2", "hash does not match", 2),
    ("UPDATE audit_log SET actor_id = 1 WHERE id = 2", "the actor does not match actor_hash", 2),
    ("UPDATE audit_log SET target_id = NULL WHERE id = 2", "the target does not match target_hash", 2),
    ("UPDATE audit_log SET actor_id = NULL, actor_salt = NULL, actor_pseudonym = 'psn:x:0', redacted_at = now() "
     "WHERE id = 2", "no privacy.redact entry lists it", 2),
    ("UPDATE audit_log SET scheme = 1 WHERE id = 2", "hash does not match", 2),
    ("DELETE FROM audit_log WHERE id = 2", "prev_hash does not match", 5),
    ("UPDATE audit_log SET created_at = created_at - interval '1 day' WHERE id = 2", "hash does not match", 2),
    # after its target was erased, the rest of the row is still checked …
    ("UPDATE audit_log SET details = '{\"reason\": \"nothing\"}' WHERE id = 1", "content does not match", 1),
    ("UPDATE audit_log SET actor_id = 1 WHERE id = 1", "the actor does not match actor_hash", 1),
    # … and so is the pseudonym that took the target's place
    ("UPDATE audit_log SET target_pseudonym = 'psn:pk1:000000000000000000000000' WHERE id = 1",
     "the target's pseudonym is not the one the privacy.redact entry records", 1),
])
async def test_tampering_is_detected_and_names_the_row(db: Database, tamper: str, reason: str, row: int) -> None:
    await _fill(db)
    await privacy.erase_user(db, USER, pseudonyms=PSEUDONYMS)  # tampering must show even in a chain with erasures
    assert (await audit.verify(db)).ok
    await db.execute("tamper", tamper)
    result = await audit.verify(db)
    assert not result.ok
    problem = result.problems[0]
    assert reason in problem.reason, [str(p) for p in result.problems]
    assert problem.row_id == row and problem.chain_id == 1
    assert f"row {row}" in str(problem)


async def test_a_truncated_tail_is_detected(db: Database) -> None:
    await _fill(db)
    await db.execute("tamper", "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log WHERE chain_id = 1)")
    result = await audit.verify(db)
    assert [p.row_id for p in result.problems] == [None] and "head points at row" in result.problems[0].reason


async def test_retention_deletes_only_what_is_past_its_age(db: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    old, recent = now - dt.timedelta(days=100), now - dt.timedelta(days=1)
    await db.execute("t", """INSERT INTO command_usage (used_at, user_id, command, success)
                             SELECT CASE WHEN g <= 7 THEN $1::timestamptz ELSE $2::timestamptz END, g, 'x', true
                             FROM generate_series(1, 10) g""", old, recent)
    await db.execute("t", "INSERT INTO error_events (code, message, occurred_at) VALUES ('E1', 'a', $1), "
                          "('E1', 'b', $2)", old, recent)
    body = KEYS.encrypt("x", context=feedback.BODY_CONTEXT, row=row_binding(0, 1))  # never read back
    await db.execute("t", """INSERT INTO feedback (author_id, body, status, closed_at, created_at) VALUES
                             (1, $1, 'resolved', $2, $2), (1, $1, 'open', NULL, $2), (1, $1, 'rejected', $3, $2)""",
                     body, old, recent)
    await db.execute("t", """INSERT INTO reminders (user_id, body, due_at, delivered_at) VALUES
                             (1, $1, $2, $2), (1, $1, $2, NULL), (1, $1, $3, $3)""", body, old, recent)
    policy = privacy.RetentionPolicy(usage_days=30, errors_days=30, feedback_days=30, reminders_days=0)
    deleted = await privacy.run_retention(db, policy, batch=3)
    assert deleted == {"command_usage": 7, "error_events": 1, "feedback": 1, "reminders": 0, "erased_users": 0}
    assert await db.fetchval("t", "SELECT count(*) FROM command_usage") == 3
    assert await db.fetchval("t", "SELECT array_agg(message) FROM error_events") == ["b"]
    assert await db.fetchval("t", "SELECT array_agg(status ORDER BY status) FROM feedback") == ["open", "rejected"]
    assert await db.fetchval("t", "SELECT count(*) FROM reminders") == 3  # 0 days keeps forever
    assert (await privacy.run_retention(db, policy))["command_usage"] == 0


async def test_key_rotation_re_encrypts_everything(db: Database) -> None:
    old = make_keys("old")
    f = await feedback.submit_feedback(db, old, author_id=1, body="feedback text")
    await feedback.close(db, old, f.id, "resolved", by=2, resolution="note")
    r = await reminders.create_reminder(db, old, user_id=1, body="reminder text", due_at=dt.datetime.now(dt.UTC))
    both = make_keys("new", "old")
    await feedback.submit_feedback(db, both, author_id=1, body="already new")
    done = await privacy.rotate_keys(db, both, batch=1)
    assert done == {"feedback.body": 1, "feedback.resolution": 1, "reminders.body": 1}
    values = await db.fetch("t", "SELECT body AS v FROM feedback UNION ALL SELECT resolution FROM feedback "
                                 "WHERE resolution IS NOT NULL UNION ALL SELECT body FROM reminders")
    assert all(v["v"].startswith("v2:new:") for v in values)
    new_only = make_keys("new")
    got = await feedback.get_feedback(db, new_only, f.id)
    assert got is not None and (got.body, got.resolution) == ("feedback text", "note")
    got_r = await reminders.get_reminder(db, new_only, r.id)
    assert got_r is not None and got_r.body == "reminder text"
    assert await privacy.rotate_keys(db, both) == {"feedback.body": 0, "feedback.resolution": 0, "reminders.body": 0}


async def test_a_ciphertext_moved_to_another_row_or_owner_does_not_decrypt(db: Database) -> None:
    mine = await feedback.submit_feedback(db, KEYS, author_id=USER, body="my secret idea", guild_id=1)
    theirs = await feedback.submit_feedback(db, KEYS, author_id=OTHER, body="their idea", guild_id=1)
    await feedback.close(db, KEYS, mine.id, "resolved", by=MOD, resolution="a private answer")
    r_mine = await reminders.create_reminder(db, KEYS, user_id=USER, body="buy milk", due_at=dt.datetime.now(dt.UTC))
    r_theirs = await reminders.create_reminder(db, KEYS, user_id=OTHER, body="call mom",
                                               due_at=dt.datetime.now(dt.UTC))
    assert (await feedback.get_feedback(db, KEYS, mine.id)).resolution == "a private answer"  # type: ignore[union-attr]
    # someone with write access copies USER's texts into OTHER's rows, hoping OTHER's export shows them
    await db.execute("t", "UPDATE feedback SET body = (SELECT body FROM feedback WHERE id = $1), "
                          "resolution = (SELECT resolution FROM feedback WHERE id = $1) WHERE id = $2",
                     mine.id, theirs.id)
    await db.execute("t", "UPDATE reminders SET body = (SELECT body FROM reminders WHERE id = $1) WHERE id = $2",
                     r_mine.id, r_theirs.id)
    with pytest.raises(DatabaseError) as info:
        await feedback.get_feedback(db, KEYS, theirs.id)
    assert info.value.code is ErrorCode.DB_BAD_VALUE
    with pytest.raises(DatabaseError) as info:
        await privacy.export_user(db, KEYS, OTHER)
    assert info.value.code is ErrorCode.DB_BAD_VALUE
    # a reminder's text that does not decrypt is shown as unreadable (delivery marks it undeliverable)
    moved = await reminders.get_reminder(db, KEYS, r_theirs.id)
    assert moved is not None and moved.body is None
    # or gives USER's row to OTHER
    await db.execute("t", "UPDATE reminders SET user_id = $1 WHERE id = $2", OTHER, r_mine.id)
    listed = {r.id: r.body for r in await reminders.list_for_user(db, KEYS, OTHER)}
    assert listed[r_mine.id] is None and "buy milk" not in listed.values()
    assert (await feedback.get_feedback(db, KEYS, mine.id)).body == "my secret idea"  # type: ignore[union-attr]


async def _legacy_rows(db: Database) -> tuple[int, int]:
    """A feedback (with a resolution) and a reminder as a database from before row binding holds them."""
    f = await db.fetchval("t", "INSERT INTO feedback (author_id, body, status, closed_at, closed_by, resolution) "
                               "VALUES ($1, $2, 'resolved', now(), $3, $4) RETURNING id", USER,
                          legacy_value("t1", "old feedback", feedback.BODY_CONTEXT), MOD,
                          legacy_value("t1", "old answer", feedback.RESOLUTION_CONTEXT))
    r = await db.fetchval("t", "INSERT INTO reminders (user_id, body, due_at) VALUES ($1, $2, now()) RETURNING id",
                          USER, legacy_value("t1", "old reminder", reminders.BODY_CONTEXT))
    return int(f), int(r)


async def test_the_upgrade_binds_old_values_to_their_rows_under_the_key_they_had(db: Database) -> None:
    f_id, r_id = await _legacy_rows(db)
    fresh = await feedback.submit_feedback(db, KEYS, author_id=OTHER, body="new feedback")
    with pytest.raises(DatabaseError) as info:  # never decrypted without its row until upgraded
        await feedback.get_feedback(db, KEYS, f_id)
    assert info.value.code is ErrorCode.DB_LEGACY_CIPHERTEXT
    waiting = await reminders.get_reminder(db, KEYS, r_id)  # shown as not readable yet
    assert waiting is not None and waiting.body is None
    rotated = make_keys("t2", "t1")  # a newer key exists: the upgrade keeps each value under its own key
    done = await privacy.upgrade_ciphertexts(db, rotated, batch=1)
    assert done == {"feedback.body": 1, "feedback.resolution": 1, "reminders.body": 1}
    values = await db.fetch("t", "SELECT body AS v FROM feedback WHERE id = $1 UNION ALL "
                                 "SELECT resolution FROM feedback WHERE id = $1 UNION ALL "
                                 "SELECT body FROM reminders WHERE id = $2", f_id, r_id)
    assert all(v["v"].startswith("v2:t1:") for v in values)
    got = await feedback.get_feedback(db, KEYS, f_id)
    assert got is not None and (got.body, got.resolution) == ("old feedback", "old answer")
    assert (await reminders.get_reminder(db, KEYS, r_id)).body == "old reminder"  # type: ignore[union-attr]
    assert (await feedback.get_feedback(db, KEYS, fresh.id)).body == "new feedback"  # type: ignore[union-attr]
    assert await privacy.upgrade_ciphertexts(db, rotated) == {"feedback.body": 0, "feedback.resolution": 0,
                                                              "reminders.body": 0}


class WriteBeforeRewrite(Database):
    """A database whose next ``reencrypt.update_*`` waits for ``before()``: a write forced in between
    the upgrade's read of a row and its rewrite."""

    before: Callable[[], Awaitable[object]] | None = None

    async def execute(self, name: str, sql: Any, *args: Any, **kw: Any) -> str:
        if name.startswith("reencrypt.update_") and self.before is not None:
            before, self.before = self.before, None
            await before()
        return await super().execute(name, sql, *args, **kw)


async def test_the_upgrade_never_overwrites_a_value_written_while_it_ran(db: Database, database_url: str) -> None:
    _, r_id = await _legacy_rows(db)
    await db.execute("t", "DELETE FROM feedback")  # only the reminder is left to upgrade
    newer = KEYS.encrypt("edited meanwhile", context=reminders.BODY_CONTEXT, row=row_binding(r_id, USER))

    async def concurrent_write() -> None:
        await db.execute("t", "UPDATE reminders SET body = $1 WHERE id = $2", newer, r_id)

    racing = WriteBeforeRewrite(database_url, min_size=1, max_size=2)
    await racing.connect()
    try:
        racing.before = concurrent_write
        done = await privacy.upgrade_ciphertexts(racing, KEYS)
    finally:
        await racing.close()
    assert racing.before is None  # the write did land in between
    assert done["reminders.body"] == 0  # the row changed under it: left alone
    assert await db.fetchval("t", "SELECT body FROM reminders WHERE id = $1", r_id) == newer
    assert (await reminders.get_reminder(db, KEYS, r_id)).body == "edited meanwhile"  # type: ignore[union-attr]


async def _cli(database_url: str, *argv: str, **env: str) -> tuple[int, str, str]:
    full = cli_env(database_url=database_url, **env)
    proc = await asyncio.create_subprocess_exec(*INNKEEPER_CLI, *argv, cwd=PROJECT_ROOT, env=full,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_export_user_needs_the_right_key(db: Database, database_url: str) -> None:
    await _fill(db)
    wrong = generate_key("t1")  # same id, different key: decryption must fail clearly, not return garbage
    (rc1, _, err1), (rc2, _, err2), (rc3, _, err3), (rc4, out, err4) = await asyncio.gather(
        _cli(database_url, "export-user", str(USER), INNKEEPER_ENCRYPTION_KEYS=wrong),
        _cli(database_url, "export-user", str(USER), INNKEEPER_ENCRYPTION_KEYS=generate_key("zz")),
        _cli(database_url, "export-user", str(USER)),
        _cli(database_url, "export-user", str(USER), INNKEEPER_ENCRYPTION_KEYS=_test_key_entry()))
    assert rc1 == 1 and "failed authentication" in err1
    assert rc2 == 2 and "encrypted with key 't1'" in err2
    assert rc3 == 2 and "INNKEEPER_ENCRYPTION_KEYS is not set" in err3
    assert rc4 == 0, err4
    assert json.loads(out)["reminders"][0]["body"] == "buy milk"


async def test_cli_erase_user_keeps_accountability(db: Database, database_url: str) -> None:
    await _fill(db)
    (rc1, _, err1), (rc2, _, err2) = await asyncio.gather(
        _cli(database_url, "erase-user", str(USER)), _cli(database_url, "erase-user", str(USER), "--yes"))
    assert rc1 == 2 and "--yes" in err1
    assert rc2 == 2 and "INNKEEPER_PSEUDONYM_KEY is not set" in err2  # never erased without accountability
    rc, out, err = await _cli(database_url, "erase-user", str(USER), "--yes", INNKEEPER_PSEUDONYM_KEY=PSEUDONYM_KEY)
    assert rc == 0, err
    assert await _rows_mentioning(db, USER) == {"audit_log": 1, "erased_users": 1}  # the note; a week-long record
    rc, out, err = await _cli(database_url, "pseudonym", str(USER), INNKEEPER_PSEUDONYM_KEY=PSEUDONYM_KEY)
    assert rc == 0 and out.strip() == PSEUDONYMS.of(USER)  # what operators resolve a legal claim with
    assert await db.fetchval("t", "SELECT count(*) FROM audit_log WHERE target_pseudonym = $1 OR actor_pseudonym = $1",
                             out.strip()) == 2


async def test_cli_audit_verify_finds_tampering(db: Database, database_url: str) -> None:
    await _fill(db)
    rc, out, err = await _cli(database_url, "audit-verify")
    assert rc == 0 and "OK" in out
    await db.execute("tamper", "UPDATE audit_log SET action = 'x' WHERE id = 2")
    rc, out, err = await _cli(database_url, "audit-verify")
    assert rc == 1 and "row 2" in err


async def test_cli_keygen_retention_and_key_rotation(db: Database, database_url: str) -> None:
    await _fill(db)
    rotated = f"{generate_key('k2')},{_test_key_entry()}"
    (rc1, out1, _), (rc2, out2, _) = await asyncio.gather(_cli(database_url, "keygen", "k9"),
                                                          _cli(database_url, "retention"))
    assert rc1 == 0 and out1.startswith("k9=")
    assert rc2 == 0 and "command_usage: deleted 0 rows" in out2
    rc, out, err = await _cli(database_url, "rotate-keys", INNKEEPER_ENCRYPTION_KEYS=rotated)
    assert rc == 0, err  # everything _fill encrypted under t1 moves to k2
    assert out.splitlines() == ["feedback.body: re-encrypted 2 values under key k2",
                                "feedback.resolution: re-encrypted 1 values under key k2",
                                "reminders.body: re-encrypted 2 values under key k2"]


def _test_key_entry() -> str:
    """The INNKEEPER_ENCRYPTION_KEYS entry of make_keys("t1")."""
    import base64
    import hashlib

    return "t1=" + base64.b64encode(hashlib.sha256(b"t1").digest()).decode()


async def test_the_cli_refuses_the_dev_key_unless_discord_is_a_local_simulator(db: Database, database_url: str) -> None:
    await _fill(db)
    rc, out, err = await _cli(database_url, "export-user", str(USER), INNKEEPER_ENCRYPTION_KEYS="dev",
                              DISCORD_API_URL="")
    assert rc == 2 and "INNKEEPER_ENCRYPTION_KEYS=dev is the public development key" in err
    rc, out, err = await _cli(database_url, "rotate-keys", INNKEEPER_ENCRYPTION_KEYS="dev",
                              DISCORD_API_URL="https://discord.com")
    assert rc == 2 and "public development key" in err
    rc, out, err = await _cli(database_url, "export-user", str(MOD + 1), INNKEEPER_ENCRYPTION_KEYS="dev",
                              DISCORD_API_URL="http://127.0.0.1:8765")
    assert rc == 0, err  # the simulator is Discord: the development key is fine (that user has no text stored)


async def test_an_export_does_not_wait_for_the_row_binding_upgrade(db: Database) -> None:
    """A text from before row binding is exported as unreadable until it is upgraded; the rest is exported."""
    await db.execute("t", "INSERT INTO reminders (user_id, body, due_at) VALUES ($1, $2, now())", USER,
                     legacy_value("t1", "old reminder", reminders.BODY_CONTEXT))
    await feedback.submit_feedback(db, KEYS, author_id=USER, body="readable feedback")
    data = await privacy.export_user(db, KEYS, USER)
    (reminder,) = data["reminders"]
    assert reminder["body"] is None and "re-encrypted" in reminder["body_unreadable"]
    assert [f["body"] for f in data["feedback"]] == ["readable feedback"]
