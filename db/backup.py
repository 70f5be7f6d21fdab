"""Backups with ``pg_dump`` and verified restores with ``pg_restore``.

:func:`backup` writes ``BACKUP_DIR/innkeeper-YYYYmmddTHHMMSSZ.dump`` (custom format) and a sidecar
``….dump.json`` with the row count of every table and the ``schema_migrations`` rows. Counts and
dump come from **one snapshot**: a repeatable-read transaction exports its snapshot and
``pg_dump --snapshot`` reads exactly that, so the counts match the dump even while the bot writes.
Only the newest ``INNKEEPER_BACKUP_KEEP`` backups are kept.

:func:`restore` checks the dump against the sidecar's SHA-256, restores into a database that does
not exist or is empty (``force`` drops and recreates a non-empty one), in a single transaction,
then verifies the restored row counts and migration checksums against the sidecar.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from pypika import Table
from pypika.functions import Count
from pypika.terms import Function

from innkeeper.errors import DatabaseError, ErrorCode

from . import error_translation as errors
from .migrate import DATABASE_EXISTS, SELECT_APPLIED, TABLE_EXISTS, database_name, maintenance_dsn
from .sql import Cast, PgQuery, Sql, Subscript, built, create_database, drop_database

__all__ = ("BackupResult", "RestoreResult", "backup", "restore", "list_backups", "table_counts", "SIDECAR_SUFFIX")

_log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
_NAME_RE = re.compile(r"^innkeeper-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.dump$")
_class = Table("pg_class").as_("c")
_namespace = Table("pg_namespace").as_("n")


def _count_tables() -> Sql:
    """Every table of the public schema with its row count, in one statement."""
    # A template for format(), whose %I quotes the schema and table names server-side; query_to_xml
    # runs it for each table and xpath reads the count back out of the XML.
    count_one = PgQuery.from_(Table("%I", schema="%I")).select(Count("*").as_("n")).get_sql(quote_char=None)
    as_xml = Function("query_to_xml", Function("format", count_one, _namespace.nspname, _class.relname),
                      False, True, "")
    rows = Cast(Cast(Subscript(Function("xpath", "/row/n/text()", as_xml), 1), "text"), "bigint")
    return built(
        PgQuery.from_(_class).join(_namespace).on(_namespace.oid == _class.relnamespace)
        .select(_class.relname.as_("table_name"), rows.as_("n"))
        .where((_namespace.nspname == "public") & _class.relkind.isin(["r", "p"]))
        .orderby(_class.relname)
    )


_COUNT_TABLES = _count_tables()
_USER_RELATIONS = built(
    PgQuery.from_(_class).join(_namespace).on(_namespace.oid == _class.relnamespace).select(Count("*"))
    .where(_namespace.nspname.notin(["pg_catalog", "information_schema", "pg_toast"])
           & _namespace.nspname.not_like("pg_temp%") & _class.relkind.isin(["r", "p", "v", "m", "S", "f"]))
)
_EXPORT_SNAPSHOT = built(PgQuery.select(Function("pg_export_snapshot")))


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    sidecar: Path
    counts: dict[str, int]
    size: int
    pruned: list[Path]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    database: str
    counts: dict[str, int]


def _split_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """``dsn`` without its password, and an environment carrying it (keeps it out of ``ps``)."""
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{netloc[1]}")
    return urlunsplit(parts), env


async def _run_tool(*argv: str, env: dict[str, str]) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise DatabaseError(f"{argv[0]} is not installed (apt-get install postgresql-client)",
                            code=ErrorCode.DB_UNAVAILABLE) from None
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise DatabaseError(f"{argv[0]} failed (exit {proc.returncode}): {' | '.join(tail)}",
                            code=ErrorCode.DB_QUERY)


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """``{table: rows}`` for every table in the public schema."""
    return {r["table_name"]: r["n"] for r in await conn.fetch(_COUNT_TABLES)}


async def _migrations(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    if not await conn.fetchval(TABLE_EXISTS):
        return []
    return [dict(r) for r in await conn.fetch(SELECT_APPLIED)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_backups(directory: Path) -> list[Path]:
    """Backups in ``directory``, oldest first."""
    found = []
    for path in directory.glob("innkeeper-*.dump"):
        m = _NAME_RE.match(path.name)
        if m:
            found.append(((m["stamp"], int(m["n"] or 0)), path))
    return [p for _, p in sorted(found)]


async def backup(dsn: str, directory: Path, *, keep: int = 7, now: dt.datetime | None = None) -> BackupResult:
    """Dump the database at ``dsn`` into ``directory`` and prune to the newest ``keep`` backups."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    path = await asyncio.to_thread(_new_path, directory, stamp)
    tmp = path.with_name(path.name + ".part")
    plain_dsn, env = _split_dsn(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except Exception as exc:
        raise errors.translate(exc, query="backup connect") from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval(_EXPORT_SNAPSHOT)
            counts = await table_counts(conn)
            migrations = await _migrations(conn)
            await _run_tool("pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={tmp}",
                            f"--dbname={plain_dsn}", env=env)
    except DatabaseError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise errors.translate(exc, query="backup") from exc
    finally:
        await conn.close()
    meta = {"database": database_name(dsn), "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "tables": counts, "schema_migrations": migrations}
    result = await asyncio.to_thread(_finish, tmp, path, meta, keep)
    _log.info("backup written", extra={"path": str(path), "tables": len(counts), "pruned": len(result.pruned)})
    return result


def _new_path(directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path, n = directory / f"innkeeper-{stamp}.dump", 1
    while path.exists():
        n += 1
        path = directory / f"innkeeper-{stamp}-{n}.dump"
    return path


def _finish(tmp: Path, path: Path, meta: dict[str, Any], keep: int) -> BackupResult:
    """Move the finished dump in place, write its sidecar, prune old backups."""
    tmp.replace(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    meta["sha256"] = _sha256(path)
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    pruned = []
    for old in list_backups(path.parent)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_name(old.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
        pruned.append(old)
    return BackupResult(path, sidecar, meta["tables"], path.stat().st_size, pruned)


def _load_sidecar(file: Path) -> dict[str, Any]:
    """The backup's sidecar, after checking the dump's SHA-256 against it."""
    sidecar = file.with_name(file.name + SIDECAR_SUFFIX)
    if not file.is_file():
        raise DatabaseError(f"no backup file at {file}", code=ErrorCode.DB_QUERY)
    if not sidecar.is_file():
        raise DatabaseError(f"the backup {file.name} has no sidecar {sidecar.name}; it cannot be verified",
                            code=ErrorCode.DB_QUERY)
    try:
        meta: dict[str, Any] = json.loads(sidecar.read_text())
    except ValueError:
        raise DatabaseError(f"{sidecar.name} is not valid JSON", code=ErrorCode.DB_QUERY) from None
    if _sha256(file) != meta.get("sha256"):
        raise DatabaseError(f"{file.name} does not match the checksum in {sidecar.name} (corrupted or replaced)",
                            code=ErrorCode.DB_QUERY)
    return meta


async def _prepare_target(dsn: str, *, force: bool) -> None:
    name = database_name(dsn)
    admin = await asyncpg.connect(maintenance_dsn(dsn), timeout=10)
    try:
        exists = await admin.fetchval(DATABASE_EXISTS, name)
        if exists:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                relations = await conn.fetchval(_USER_RELATIONS)
            finally:
                await conn.close()
            if relations == 0:
                return
            if not force:
                raise DatabaseError(f"the target database {name} is not empty ({relations} relations); restore into "
                                    "a new database with --target-db NAME, or pass --force to drop and recreate it",
                                    code=ErrorCode.DB_QUERY)
            _log.warning("dropping the non-empty database %s before restoring (--force)", name)
            await admin.execute(drop_database(name, force=True))
        await admin.execute(create_database(name))
    finally:
        await admin.close()


async def restore(dsn: str, file: Path, *, force: bool = False) -> RestoreResult:
    """Restore ``file`` into the database named in ``dsn`` and verify it against the sidecar.

    Raises
    ------
    DatabaseError
        When the dump or its sidecar is missing or does not match, the target is not empty
        (without ``force``), ``pg_restore`` fails, or the restored data differs from the sidecar.
    """
    meta = await asyncio.to_thread(_load_sidecar, file)
    try:
        await _prepare_target(dsn, force=force)
    except DatabaseError:
        raise
    except Exception as exc:
        raise errors.translate(exc, query="restore prepare") from exc
    plain_dsn, env = _split_dsn(dsn)
    await _run_tool("pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                    f"--dbname={plain_dsn}", str(file), env=env)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        counts = await table_counts(conn)
        migrations = await _migrations(conn)
    finally:
        await conn.close()
    expected = {k: int(v) for k, v in meta.get("tables", {}).items()}
    if counts != expected:
        diff = sorted(t for t in set(counts) | set(expected) if counts.get(t) != expected.get(t))
        raise DatabaseError(f"restored row counts differ from the backup for {', '.join(diff)}",
                            code=ErrorCode.DB_QUERY, expected=expected, restored=counts)
    if migrations != meta.get("schema_migrations", []):
        raise DatabaseError("restored schema_migrations differ from the backup's", code=ErrorCode.DB_MIGRATION)
    _log.info("restore verified", extra={"database": database_name(dsn), "tables": len(counts)})
    return RestoreResult(database_name(dsn), counts)
