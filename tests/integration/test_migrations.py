"""Migrations against a real PostgreSQL: from empty, idempotent, concurrent, checksum-guarded."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from db.migrate import REQUIRED_SCHEMA_VERSION, current_version, discover, ensure_database, migrate, require_schema
from db.pool import Database
from innkeeper.errors import DatabaseError, ErrorCode
from innkeeper.settings import PROJECT_ROOT
from tests.procs import cli_env
from tests.support import INNKEEPER_CLI, PG_ADMIN_DSN

pytestmark = pytest.mark.integration


async def _applied(dsn: str) -> list[tuple[int, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"], r["checksum"]) for r in rows]
    finally:
        await conn.close()


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()


async def test_apply_from_empty_then_nothing_to_do(database_url: str) -> None:
    expected = [(m.version, m.name, m.checksum) for m in discover()]
    dry = await migrate(database_url, dry_run=True)
    assert [m.version for m in dry.pending] == [v for v, _, _ in expected] and not dry.applied
    assert await _tables(database_url) == set()  # a dry run changes nothing

    first = await migrate(database_url)
    assert [m.version for m in first.applied] == [v for v, _, _ in expected]
    assert first.version_before == 0 and first.version_after == REQUIRED_SCHEMA_VERSION
    assert await _applied(database_url) == expected
    assert {"guilds", "guild_settings", "role_permissions", "command_overrides", "aliases", "feedback", "audit_log",
            "audit_heads", "command_usage", "reminders", "error_events",
            "schema_migrations"} <= await _tables(database_url)

    again = await migrate(database_url)
    assert again.applied == [] and again.pending == []
    assert again.version_before == again.version_after == REQUIRED_SCHEMA_VERSION
    assert await _applied(database_url) == expected
    assert (await migrate(database_url, dry_run=True)).pending == []


async def test_four_concurrent_cli_runs_apply_each_migration_once(database_url: str) -> None:
    env = cli_env(database_url=database_url)
    procs = [
        await asyncio.create_subprocess_exec(*INNKEEPER_CLI, "migrate", cwd=PROJECT_ROOT, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(4)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 90)
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    stdout = [out.decode() for out, _ in outputs]
    applied_lines = [line for text in stdout for line in text.splitlines() if line.startswith("applied ")]
    migrations = discover()
    # Each file was applied by exactly one of the four runners; the others found nothing to do.
    assert sorted(applied_lines) == sorted(f"applied {m.filename}" for m in migrations)
    assert await _applied(database_url) == [(m.version, m.name, m.checksum) for m in migrations]


async def test_edited_migration_is_refused_by_name(database_url: str, tmp_path: Path) -> None:
    for m in discover():
        shutil.copy(m.path, tmp_path / m.filename)
    await migrate(database_url, directory=tmp_path)
    edited = tmp_path / discover()[1].filename
    edited.write_text(edited.read_text() + "\n-- an innocent comment\n")
    (tmp_path / "V99__later.sql").write_text("CREATE TABLE later (id int);")
    for dry_run in (True, False):
        with pytest.raises(DatabaseError) as info:
            await migrate(database_url, directory=tmp_path, dry_run=dry_run)
        assert info.value.code is ErrorCode.DB_MIGRATION
        assert edited.name in info.value.message
    assert "later" not in await _tables(database_url)  # nothing after the refusal ran


async def test_failing_migration_rolls_back_alone(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "V1__ok.sql").write_text("CREATE TABLE one (id int);")
    (tmp_path / "V2__broken.sql").write_text("CREATE TABLE two (id int);\nSELECT * FROM no_such_table;")
    with pytest.raises(DatabaseError) as info:
        await migrate(database_url, directory=tmp_path)
    assert info.value.code is ErrorCode.DB_MIGRATION and "V2__broken.sql" in info.value.message
    assert await _tables(database_url) == {"schema_migrations", "one"}  # V2's table was rolled back
    assert [v for v, _, _ in await _applied(database_url)] == [1]


async def test_require_schema_refuses_an_old_schema(database_url: str, tmp_path: Path) -> None:
    shutil.copy(discover()[0].path, tmp_path)
    async with Database(database_url, min_size=1, max_size=2) as db:
        with pytest.raises(DatabaseError) as info:
            await require_schema(db)
        assert info.value.code is ErrorCode.DB_SCHEMA_OUTDATED
        assert f"version 0 but this code needs version {REQUIRED_SCHEMA_VERSION}" in info.value.message
        await migrate(database_url, directory=tmp_path)
        with pytest.raises(DatabaseError) as info:
            await require_schema(db)
        assert f"version 1 but this code needs version {REQUIRED_SCHEMA_VERSION}" in info.value.message
        await migrate(database_url)
        assert await require_schema(db) == REQUIRED_SCHEMA_VERSION
        assert await current_version(db) == REQUIRED_SCHEMA_VERSION


async def test_migrate_creates_a_missing_database_once_under_a_race() -> None:
    name = f"ikt_create_{uuid.uuid4().hex[:12]}"
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        created = await asyncio.gather(*(ensure_database(dsn) for _ in range(3)))
        assert sorted(created) == [False, False, True]  # the database was missing: exactly one call made it
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
        report = await migrate(dsn)
        assert report.version_after == REQUIRED_SCHEMA_VERSION and not report.created_database
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrate_on_a_fresh_machine_creates_the_database() -> None:
    name = f"ikt_fresh_{uuid.uuid4().hex[:12]}"
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        report = await migrate(dsn)
        assert report.created_database and report.version_after == REQUIRED_SCHEMA_VERSION
        dry = await migrate(f"{dsn}_absent", dry_run=True)  # a dry run never creates anything
        assert len(dry.pending) == len(discover())
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", f"{name}_absent")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
