"""Backup → restore round trips with pg_dump / pg_restore, compared row for row."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from db import aliases, audit, feedback, guilds, permissions, reminders
from db.backup import backup, list_backups
from db.error_events import record_error
from db.migrate import discover, maintenance_dsn
from db.pool import Database
from db.restore import restore
from db.testing import make_keys, migrated
from db.usage import UsageRecorder
from innkeeper.errors import DatabaseError
from innkeeper.settings import PROJECT_ROOT
from tests.procs import cli_env
from tests.support import INNKEEPER_CLI, PG_ADMIN_DSN

pytestmark = pytest.mark.integration
KEYS = make_keys()


async def _fill(db: Database) -> None:
    await guilds.set_prefix(db, 1, "?")
    await guilds.set_feature(db, 1, "music", False)
    await permissions.set_role_level(db, 1, 10, 2)
    await permissions.set_command_override(db, 1, "ban", min_level=2, enabled=False)
    await aliases.create_alias(db, "user", 5, "b", "balance 'quoted' é", created_by=5)
    f = await feedback.submit_feedback(db, KEYS, author_id=5, body="hello\nworld", guild_id=1)
    await feedback.close(db, KEYS, f.id, "resolved", by=6, resolution="done")
    for i in range(5):
        await audit.append(db, "member.warn", guild_id=1, actor_id=6, target_id=5, details={"n": i})
    await reminders.create_reminder(db, KEYS, user_id=5, body="later", due_at=dt.datetime.now(dt.UTC))
    await record_error(db, code="E5006", message="boom", user_id=5, context={"k": [1, 2]})
    rec = UsageRecorder(db)
    for i in range(50):
        rec.record(user_id=i, command="ping", guild_id=1, latency_ms=i / 3)
    await rec.close()


async def _snapshot(dsn: str) -> dict[str, list[str]]:
    """Every row of every public table, as text, in a stable order."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        out = {}
        for t in tables:
            rows = await conn.fetch(f'SELECT x::text AS r FROM "{t}" AS x ORDER BY x::text')
            out[t] = [r["r"] for r in rows]
        return out
    finally:
        await conn.close()


@pytest.fixture
async def source(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as db:
        await _fill(db)
        yield db


@pytest.fixture
async def target_dsn(database_url: str) -> AsyncIterator[str]:
    name = f"ikt_restore_{uuid.uuid4().hex[:12]}"
    yield maintenance_dsn(database_url, name)
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_backup_restore_round_trip_row_for_row(source: Database, database_url: str, target_dsn: str,
                                                     tmp_path: Path) -> None:
    result = await backup(database_url, tmp_path, keep=3)
    assert result.path.name.startswith("innkeeper-") and result.path.suffix == ".dump"
    meta = json.loads(result.sidecar.read_text())
    assert meta["tables"]["command_usage"] == 50 and meta["tables"]["audit_log"] == 5
    assert [m["version"] for m in meta["schema_migrations"]] == [m.version for m in discover()]

    restored = await restore(target_dsn, result.path)
    assert restored.counts == meta["tables"]
    assert await _snapshot(target_dsn) == await _snapshot(database_url)
    async with Database(target_dsn) as copy:
        assert (await audit.verify(copy)).ok
        assert (await feedback.list_feedback(copy, KEYS))[0].body == "hello\nworld"
        entry = await audit.append(copy, "after.restore", guild_id=1)  # sequences came along
        assert entry.id == 6 and (await audit.verify(copy)).ok


async def test_counts_come_from_the_dump_snapshot_under_concurrent_writes(source: Database, database_url: str,
                                                                           target_dsn: str, tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            await record_error(source, code="E9999", message=f"busy {i}")
            i += 1

    task = asyncio.create_task(writer())
    try:
        result = await backup(database_url, tmp_path)
    finally:
        stop.set()
        await task
    restored = await restore(target_dsn, result.path)  # verification would fail if counts and dump disagreed
    assert restored.counts["error_events"] == result.counts["error_events"]


async def test_restore_refuses_a_non_empty_target_unless_forced(source: Database, database_url: str,
                                                                target_dsn: str, tmp_path: Path) -> None:
    result = await backup(database_url, tmp_path)
    await restore(target_dsn, result.path)
    with pytest.raises(DatabaseError) as info:
        await restore(target_dsn, result.path)
    assert "not empty" in info.value.message and "--force" in info.value.message
    restored = await restore(target_dsn, result.path, force=True)
    assert restored.counts == result.counts


async def test_restore_refuses_a_corrupted_or_unverifiable_dump(source: Database, database_url: str,
                                                                target_dsn: str, tmp_path: Path) -> None:
    result = await backup(database_url, tmp_path)
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.path.write_bytes(bytes(data))
    with pytest.raises(DatabaseError) as info:
        await restore(target_dsn, result.path)
    assert "checksum" in info.value.message
    result.sidecar.unlink()
    with pytest.raises(DatabaseError) as info:
        await restore(target_dsn, result.path)
    assert "sidecar" in info.value.message
    with pytest.raises(DatabaseError):
        await restore(target_dsn, tmp_path / "missing.dump")


async def test_backups_are_pruned_to_the_newest_n(source: Database, database_url: str, tmp_path: Path) -> None:
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    made = [await backup(database_url, tmp_path, keep=2, now=base + dt.timedelta(hours=h)) for h in range(3)]
    same_second = await backup(database_url, tmp_path, keep=3, now=base + dt.timedelta(hours=2))
    assert same_second.path.name == "innkeeper-20260101T020000Z-2.dump"
    assert list_backups(tmp_path) == [made[1].path, made[2].path, same_second.path]
    assert not made[0].path.exists() and not made[0].sidecar.exists()
    assert made[0].path in made[2].pruned


async def test_cli_backup_and_restore(source: Database, database_url: str, target_dsn: str, tmp_path: Path) -> None:
    env = cli_env(database_url=database_url, INNKEEPER_BACKUP_DIR=str(tmp_path), INNKEEPER_BACKUP_KEEP="2")

    async def run(*argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*INNKEEPER_CLI, *argv, cwd=PROJECT_ROOT,
                                                    env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await run("backup")
    assert rc == 0, err
    dump = list_backups(tmp_path)[-1]
    assert str(dump) in out
    target = target_dsn.rsplit("/", 1)[1]
    rc, out, err = await run("restore", str(dump), "--target-db", target)
    assert rc == 0, err
    assert "verified" in out
    rc, out, err = await run("restore", str(dump), "--target-db", target)
    assert rc == 1 and "not empty" in err and len(err.strip().splitlines()) == 1
    rc, out, err = await run("restore")
    assert rc == 2


async def _databases_beside(dsn: str) -> list[str]:
    """Databases named ``<target>_…``: a staging copy or a replaced target left behind."""
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        rows = await admin.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
                                 name + "_")
    finally:
        await admin.close()
    return [r["datname"] for r in rows]


async def _drop(*names: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _cut_short(dump: Path) -> None:
    """Truncate ``dump`` and make its sidecar's checksum match: a dump that was bad when it was taken."""
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) * 3 // 5])
    sidecar = dump.with_name(dump.name + ".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = hashlib.sha256(dump.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))


def _overcount(dump: Path, table: str) -> None:
    """Make the sidecar promise one row more in ``table``: the dump restores, verification fails."""
    sidecar = dump.with_name(dump.name + ".json")
    meta = json.loads(sidecar.read_text())
    meta["tables"][table] += 1
    sidecar.write_text(json.dumps(meta))


@pytest.fixture
async def restored_target(source: Database, database_url: str, target_dsn: str, tmp_path: Path) -> Path:
    """``target_dsn`` holds a verified restore of the source, plus one row of its own; returns the dump."""
    result = await backup(database_url, tmp_path)
    await restore(target_dsn, result.path)
    async with Database(target_dsn) as target:
        await record_error(target, code="E9999", message="only in the target")
    return result.path


async def test_a_failing_pg_restore_leaves_the_target_intact(restored_target: Path, target_dsn: str) -> None:
    """``--force`` with a dump that pg_restore cannot read: the target keeps every row, nothing is left over."""
    before = await _snapshot(target_dsn)
    assert "only in the target" in "".join(before["error_events"])
    _cut_short(restored_target)
    with pytest.raises(DatabaseError) as info:
        await restore(target_dsn, restored_target, force=True)
    assert await _snapshot(target_dsn) == before
    assert "pg_restore failed" in info.value.message and "was not touched" in info.value.message
    assert await _databases_beside(target_dsn) == []  # the staging copy is gone


async def test_a_restore_that_fails_verification_keeps_the_target_and_the_copy(restored_target: Path,
                                                                            target_dsn: str) -> None:
    before = await _snapshot(target_dsn)
    _overcount(restored_target, "command_usage")
    with pytest.raises(DatabaseError) as info:
        await restore(target_dsn, restored_target, force=True)
    left = await _databases_beside(target_dsn)
    try:
        assert await _snapshot(target_dsn) == before
        assert "command_usage" in info.value.message and "was not touched" in info.value.message
        assert len(left) == 1 and "_restore_" in left[0] and left[0] in info.value.message  # kept for inspection
    finally:
        await _drop(*left)


async def test_a_forced_restore_swaps_in_the_copy_and_ends_open_connections(restored_target: Path,
                                                                          database_url: str, target_dsn: str) -> None:
    held = await asyncpg.connect(target_dsn)  # a cluster that was not stopped
    try:
        restored = await restore(target_dsn, restored_target, force=True)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await held.fetchval("SELECT 1")
    finally:
        await held.close()
    assert restored.counts["error_events"] == 1
    assert await _snapshot(target_dsn) == await _snapshot(database_url)  # the target's own row is gone
    assert await _databases_beside(target_dsn) == []  # the replaced database was dropped
    conn = await asyncpg.connect(target_dsn)  # and the target accepts connections
    await conn.close()
