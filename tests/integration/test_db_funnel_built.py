"""At run time, on a real database: every statement the db modules send is SQL built by pypika.

* The funnel (:meth:`db.pool.Database._run`, behind fetch/fetchrow/fetchval/execute/executemany) is
  wrapped to refuse any SQL that did not come from :func:`db.sql.built`, while every public db
  function runs its main paths. Every query constant those functions own must have been sent, so the
  walk cannot silently skip one, and each built query has run on PostgreSQL once.
* ``db.migrate``, ``db.backup`` and ``db.restore`` talk to bare asyncpg connections (before a pool exists, or to
  another database); what they send is recorded the same way during a migration, a backup and two
  forced restores: built SQL, or a migration file.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db import (
    aliases,
    audit,
    error_events,
    feedback,
    guilds,
    maintenance,
    migrate,
    permissions,
    privacy,
    reminders,
    usage,
)
from db.backup import backup
from db.pool import Database
from db.restore import restore
from db.sql import is_built
from db.testing import make_keys, migrated, sql_constants
from innkeeper.errors import DatabaseError
from tests.integration.test_privacy import PSEUDONYMS, legacy_audit_row
from tests.support import PG_ADMIN_DSN

pytestmark = pytest.mark.integration

KEYS = make_keys("t1")
ROTATED = make_keys("t2", "t1")
# Statements that never go through the funnel: the migration runner's and the backups' own.
RAW_MODULES = ("migrate", "backup", "restore")
FUNNEL_THROUGH_RAW = {"migrate.TABLE_EXISTS", "migrate._MAX_VERSION"}  # current_version() uses the funnel


def _constants(*, funnel: bool) -> dict[str, str]:
    found = {}
    for where, text in sql_constants().items():
        module = where.split(".", 1)[0]
        if "._LIST[" in where:  # the list queries' filter variants: the walk sends some, checked below
            continue
        if (module not in RAW_MODULES or where in FUNNEL_THROUGH_RAW) == funnel:
            found[where] = text
    return found


async def _walk_every_db_function(db: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    gid, uid, mod = 101, 202, 303
    # guilds
    await guilds.ensure_guild(db, gid)
    await guilds.get_settings(db, gid)
    assert (await guilds.get_settings_many(db, [gid, gid + 1]))[gid + 1] == guilds.GuildSettings(gid + 1)
    await guilds.set_prefix(db, gid, "?")
    await guilds.set_feature(db, gid, "music", False)
    await guilds.clear_feature(db, gid, "music")
    await guilds.set_log_channel(db, gid, 5)
    await guilds.set_automod_level(db, gid, 2)
    await guilds.set_locale(db, gid, "pt-BR")
    await guilds.mark_left(db, gid)
    # permissions
    await permissions.set_role_level(db, gid, 10, 2)
    await permissions.get_role_levels(db, gid)
    assert set(await permissions.get_role_levels_many(db, [gid, gid + 1])) == {gid, gid + 1}
    assert set(await permissions.list_command_overrides_many(db, [gid])) == {gid}
    assert await permissions.level_for_roles(db, gid, [10, 11]) == 2
    await permissions.remove_role_level(db, gid, 10)
    await permissions.set_command_override(db, gid, "ban", min_level=2, enabled=False)
    await permissions.get_command_override(db, gid, "ban")
    await permissions.list_command_overrides(db, gid)
    await permissions.clear_command_override(db, gid, "ban")
    # aliases
    await aliases.create_alias(db, "user", uid, "b", "balance", created_by=uid)
    with pytest.raises(DatabaseError, match="already exists"):
        await aliases.create_alias(db, "user", uid, "b", "balance", created_by=uid)
    await aliases.get_alias(db, "user", uid, "b")
    assert await aliases.resolve_alias(db, gid, uid, "b") is not None
    await aliases.list_aliases(db, "user", uid)
    await aliases.create_alias(db, "guild", gid, "g", "greet", created_by=uid)
    await aliases.delete_alias(db, "guild", gid, "g")
    # feedback
    first = await feedback.submit_feedback(db, KEYS, author_id=uid, body="hello", guild_id=gid)
    second = await feedback.submit_feedback(db, KEYS, author_id=uid, body="again")
    await feedback.get_feedback(db, KEYS, first.id)
    await feedback.list_feedback(db, KEYS, guild_id=gid, statuses=("open",), author_id=uid, before_id=10**9)
    await feedback.list_feedback(db, KEYS)
    await feedback.acknowledge(db, KEYS, first.id, by=mod)
    with pytest.raises(DatabaseError, match="cannot become acknowledged"):
        await feedback.acknowledge(db, KEYS, first.id, by=mod)  # the refusal reads the status
    await feedback.close(db, KEYS, first.id, "resolved", by=mod, resolution="done")
    await feedback.close(db, KEYS, second.id, "rejected", by=mod)
    # audit
    for i in range(3):
        await audit.append(db, "member.warn", guild_id=gid, actor_id=mod, target_id=uid, details={"n": i})
    await audit.recent(db, gid)
    await audit.for_user(db, uid)
    assert (await audit.verify(db)).ok
    # reminders
    due = await reminders.create_reminder(db, KEYS, user_id=uid, body="now", due_at=now - dt.timedelta(seconds=1))
    later = await reminders.create_reminder(db, KEYS, user_id=uid, body="later", due_at=now + dt.timedelta(hours=1))
    await reminders.get_reminder(db, KEYS, due.id)
    await reminders.list_for_user(db, KEYS, uid)
    await reminders.next_due(db)
    assert [r.id for r in await reminders.claim_due(db, KEYS, "cluster-0")] == [due.id]
    assert await reminders.release_claim(db, due.id, "cluster-0")
    await reminders.claim_due(db, KEYS, "cluster-1")
    assert await reminders.release_claim(db, due.id, "cluster-1", attempted=False)
    await reminders.claim_due(db, KEYS, "cluster-1")
    assert await reminders.extend_claim(db, due.id, "cluster-1", lease=30)
    assert await reminders.mark_delivered(db, due.id, "cluster-1")
    failing = await reminders.create_reminder(db, KEYS, user_id=uid, body="no", due_at=now - dt.timedelta(seconds=1))
    await reminders.claim_due(db, KEYS, "cluster-1")
    assert await reminders.mark_failed(db, failing.id, "cluster-1", "dm_closed")
    assert [u.id for u in await reminders.take_failures(db, uid)] == [failing.id]
    assert await reminders.cancel_reminder(db, uid, later.id)
    await reminders.create_reminder(db, KEYS, user_id=uid, body="kept", due_at=now + dt.timedelta(hours=2))
    # usage
    recorder = usage.UsageRecorder(db)
    recorder.record(user_id=uid, command="ping", guild_id=gid, latency_ms=1.5)
    recorder.record(user_id=uid, command="ping", guild_id=gid, success=False)
    assert await recorder.flush() == 2
    await db.execute("command_usage.insert_one", usage.INSERT_ONE, now, gid, 1, uid, "ping", 0, 0, True, 2.5)
    assert (await usage.top_commands(db, gid, since=now - dt.timedelta(hours=1)))[0].uses == 3
    await usage.usage_by_day(db, gid, since=now - dt.timedelta(days=1), command="ping")
    # error events
    await error_events.record_error(db, code="E5006", message="boom", guild_id=gid, user_id=uid)
    await error_events.list_errors(db, code="E5006", guild_id=gid, since=now - dt.timedelta(hours=1), before_id=10**9)
    # schema, health
    assert await migrate.require_schema(db) == migrate.REQUIRED_SCHEMA_VERSION
    assert (await db.health()).ok
    # privacy: rotation (rewrites every encrypted column), export, retention, erasure
    await privacy.upgrade_ciphertexts(db, ROTATED)
    rotated = await privacy.rotate_keys(db, ROTATED)
    assert rotated == {"feedback.body": 2, "feedback.resolution": 1, "reminders.body": 3}
    await privacy.export_user(db, ROTATED, uid)
    await privacy.run_retention(db, privacy.RetentionPolicy(), now=now + dt.timedelta(days=400))
    done = await maintenance.run_maintenance(db, privacy.RetentionPolicy(), retention_every=dt.timedelta(0),
                                             upgrade_with=ROTATED)
    assert done is not None and done.deleted is not None
    await privacy.erase_user(db, uid, pseudonyms=PSEUDONYMS)
    assert uid in await privacy.erased_since(db, [uid], now - dt.timedelta(minutes=1))
    assert await guilds.delete_guild(db, gid)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


async def test_every_statement_sent_through_the_funnel_is_built(db: Database,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    not_built: list[str] = []
    run = Database._run

    async def checked(self: Database, kind: str, name: str, sql: str, *rest: Any) -> Any:
        sent.append(sql)
        if not is_built(sql):
            not_built.append(f"{name}: {sql}")
        return await run(self, kind, name, sql, *rest)  # type: ignore[arg-type]

    await legacy_audit_row(db, "member.ban", guild_id=101, actor_id=303, target_id=202)  # erased as scheme 1
    monkeypatch.setattr(Database, "_run", checked)
    await _walk_every_db_function(db)
    assert not not_built, "hand-written SQL reached the funnel:\n" + "\n".join(not_built)
    missing = sorted(where for where, text in _constants(funnel=True).items() if text not in sent)
    assert not missing, f"the walk never sent these queries (extend it): {missing}"
    assert sum(text in sent for text in feedback._LIST.values()) >= 2
    assert sum(text in sent for text in error_events._LIST.values()) >= 1


def _direct_caller() -> str:
    return str(sys._getframe(2).f_globals.get("__name__", ""))


async def test_migrations_and_backups_send_only_built_sql(database_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str]] = []
    for method in ("execute", "fetch", "fetchrow", "fetchval"):
        original = getattr(asyncpg.Connection, method)

        def record(original: Any = original) -> Any:
            async def recording(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
                caller = _direct_caller()
                if caller.startswith("db."):
                    sent.append((caller, query))
                return await original(self, query, *args, **kwargs)
            return recording

        monkeypatch.setattr(asyncpg.Connection, method, record())

    target = migrate.maintenance_dsn(database_url, f"ikt_funnel_{uuid.uuid4().hex[:12]}")
    try:
        await migrate.migrate(database_url)
        done = await backup(database_url, tmp_path)
        await restore(target, done.path)  # a new database: CREATE DATABASE
        await restore(target, done.path, force=True)  # a non-empty one: swapped in, the old one dropped
    finally:
        monkeypatch.undo()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{migrate.database_name(target)}" WITH (FORCE)')
        finally:
            await admin.close()
    files = {m.sql for m in migrate.discover()}
    assert {caller for caller, _ in sent} == {"db.migrate", "db.backup", "db.restore"}
    stray = [f"{caller}: {sql[:80]}" for caller, sql in sent if not is_built(sql) and sql not in files]
    assert not stray, "hand-written SQL sent on a bare connection:\n" + "\n".join(stray)
    texts = {sql for _, sql in sent}
    assert files <= texts
    missing = sorted(where for where, text in _constants(funnel=False).items() if text not in texts)
    assert not missing, f"never sent (extend the test): {missing}"
    assert any(sql.startswith("CREATE DATABASE") for sql in texts)
    assert any(sql.startswith("DROP DATABASE") and sql.endswith("WITH (FORCE)") for sql in texts)
