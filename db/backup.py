"""Backups with ``pg_dump``; restoring them is :mod:`db.restore`.

:func:`backup` writes ``BACKUP_DIR/innkeeper-YYYYmmddTHHMMSSZ.dump`` (custom format) and a sidecar
``….dump.json`` with the row count of every table and the ``schema_migrations`` rows. Counts and
dump come from **one snapshot**: a repeatable-read transaction exports its snapshot and
``pg_dump --snapshot`` reads exactly that, so the counts match the dump even while the bot writes.
Dumps and sidecars are created with mode 0600 in a directory created 0700 (:mod:`innkeeper.files`):
they hold every user's data. Only the newest ``INNKEEPER_BACKUP_KEEP`` backups are kept. The
sidecar also holds the dump's SHA-256, which :func:`db.restore.restore` checks before it trusts
the dump.
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
from innkeeper.files import create_private, private_dir, write_private

from . import error_translation as errors
from .migrate import SELECT_APPLIED, TABLE_EXISTS, database_name
from .sql import Cast, PgQuery, Sql, Subscript, built

__all__ = ("BackupResult", "backup", "list_backups", "table_counts", "migrations_of", "sha256_of", "split_dsn",
           "run_tool", "SIDECAR_SUFFIX")

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
_EXPORT_SNAPSHOT = built(PgQuery.select(Function("pg_export_snapshot")))


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    sidecar: Path
    counts: dict[str, int]
    size: int
    pruned: list[Path]


def split_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """``dsn`` without its password, and an environment carrying it (keeps it out of ``ps``)."""
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{netloc[1]}")
    return urlunsplit(parts), env


async def run_tool(*argv: str, env: dict[str, str]) -> None:
    """Run a PostgreSQL client tool; anything it creates is private to this user (umask 077)."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, umask=0o077)
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


async def migrations_of(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The ``schema_migrations`` rows (version, name, checksum, …), or none before the first migration."""
    if not await conn.fetchval(TABLE_EXISTS):
        return []
    return [dict(r) for r in await conn.fetch(SELECT_APPLIED)]


def sha256_of(path: Path) -> str:
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
    plain_dsn, env = split_dsn(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except Exception as exc:
        raise errors.translate(exc, query="backup connect") from exc
    try:
        # pg_dump writes into a file that exists already, created with mode 0600: it is never readable by others
        await asyncio.to_thread(lambda: os.close(create_private(tmp)))
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval(_EXPORT_SNAPSHOT)
            counts = await table_counts(conn)
            migrations = await migrations_of(conn)
            await run_tool("pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={tmp}",
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
    private_dir(directory)
    path, n = directory / f"innkeeper-{stamp}.dump", 1
    while path.exists():
        n += 1
        path = directory / f"innkeeper-{stamp}-{n}.dump"
    return path


def _finish(tmp: Path, path: Path, meta: dict[str, Any], keep: int) -> BackupResult:
    """Move the finished dump in place, write its sidecar, prune old backups."""
    tmp.replace(path)
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    meta["sha256"] = sha256_of(path)
    write_private(sidecar, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    pruned = []
    for old in list_backups(path.parent)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_name(old.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
        pruned.append(old)
    return BackupResult(path, sidecar, meta["tables"], path.stat().st_size, pruned)
