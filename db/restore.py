"""Verified restores with ``pg_restore`` that never put the target at risk.

:func:`restore` checks the dump against its sidecar's SHA-256, then restores it into a **new
staging database** beside the target (``<target>_restore_<hex>``), in a single transaction, and
verifies the staging copy against the sidecar (every table's row count, the ``schema_migrations``
rows with their checksums). Only a verified copy takes the target's place:

1. new connections to the target are refused (``ALLOW_CONNECTIONS false``) and open ones are
   terminated (the clusters should be stopped anyway; the pool of one that is not reconnects
   after the swap);
2. in one transaction the target is renamed away (``<target>_replaced_<hex>``) and the staging
   copy renamed to the target's name: both renames happen, or neither;
3. only then is the replaced database dropped.

When ``pg_restore`` fails the staging database is dropped and the target is untouched. When the
verification fails the staging copy is kept for inspection (the error names it) and the target is
untouched. When the swap fails the target keeps its name and accepts connections again. A target
that does not exist yet simply receives the staging copy's name; a non-empty one is replaced only
with ``force``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from pypika import Table
from pypika.functions import Count
from pypika.terms import Function

from innkeeper.errors import DatabaseError, ErrorCode

from . import error_translation as errors
from .backup import SIDECAR_SUFFIX, migrations_of, run_tool, sha256_of, split_dsn, table_counts
from .migrate import DATABASE_EXISTS, database_name, maintenance_dsn
from .sql import P1, PgQuery, allow_connections, built, create_database, drop_database, rename_database

__all__ = ("RestoreResult", "restore")

_log = logging.getLogger(__name__)

_class = Table("pg_class").as_("c")
_namespace = Table("pg_namespace").as_("n")
_activity = Table("pg_stat_activity")
_USER_RELATIONS = built(
    PgQuery.from_(_class).join(_namespace).on(_namespace.oid == _class.relnamespace).select(Count("*"))
    .where(_namespace.nspname.notin(["pg_catalog", "information_schema", "pg_toast"])
           & _namespace.nspname.not_like("pg_temp%") & _class.relkind.isin(["r", "p", "v", "m", "S", "f"]))
)
_TERMINATE_OTHERS = built(
    PgQuery.from_(_activity).select(Function("pg_terminate_backend", _activity.pid))
    .where((_activity.datname == P1) & (_activity.pid != Function("pg_backend_pid")))
)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    database: str
    counts: dict[str, int]


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
    if sha256_of(file) != meta.get("sha256"):
        raise DatabaseError(f"{file.name} does not match the checksum in {sidecar.name} (corrupted or replaced)",
                            code=ErrorCode.DB_QUERY)
    return meta


def _side_name(name: str, role: str) -> str:
    """A fresh database name beside ``name`` (``<name>_<role>_<hex>``, within PostgreSQL's 63 bytes)."""
    head = name.encode("utf-8")[:40].decode("utf-8", "ignore")
    return f"{head}_{role}_{uuid.uuid4().hex[:10]}"


async def _relations(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval(_USER_RELATIONS))
    finally:
        await conn.close()


async def _verify(dsn: str, meta: dict[str, Any]) -> dict[str, int]:
    """The restored row counts, after comparing them and the migrations with the sidecar."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        counts = await table_counts(conn)
        migrations = await migrations_of(conn)
    finally:
        await conn.close()
    expected = {k: int(v) for k, v in meta.get("tables", {}).items()}
    if counts != expected:
        diff = sorted(t for t in set(counts) | set(expected) if counts.get(t) != expected.get(t))
        raise DatabaseError(f"restored row counts differ from the backup for {', '.join(diff)}",
                            code=ErrorCode.DB_QUERY, expected=expected, restored=counts)
    if migrations != meta.get("schema_migrations", []):
        raise DatabaseError("restored schema_migrations differ from the backup's", code=ErrorCode.DB_MIGRATION)
    return counts


async def _swap(admin: asyncpg.Connection, name: str, staging: str, *, replace: bool) -> None:
    """Give ``staging`` the name ``name``; the database that had it is dropped only afterwards."""
    if not replace:
        await admin.execute(rename_database(staging, name))
        return
    replaced = _side_name(name, "replaced")
    await admin.execute(allow_connections(name, False))
    try:
        await admin.fetch(_TERMINATE_OTHERS, name)
        async with admin.transaction():  # ALTER DATABASE ... RENAME is transactional: both or neither
            await admin.execute(rename_database(name, replaced))
            await admin.execute(rename_database(staging, name))
    except BaseException:
        await admin.execute(allow_connections(name, True))
        raise
    _log.warning("replaced the database %s with the verified restore; dropping the old one", name)
    try:
        await admin.execute(drop_database(replaced, force=True))
    except asyncpg.PostgresError as exc:
        _log.warning("the replaced database %s could not be dropped (%s); drop it by hand", replaced, exc)


async def restore(dsn: str, file: Path, *, force: bool = False) -> RestoreResult:
    """Restore ``file`` as the database named in ``dsn``, verified, without ever emptying it first.

    Raises
    ------
    DatabaseError
        When the dump or its sidecar is missing or does not match, the target is not empty
        (without ``force``), ``pg_restore`` fails, or the restored copy differs from the sidecar.
        In every case the target database is as it was.
    """
    meta = await asyncio.to_thread(_load_sidecar, file)
    name = database_name(dsn)
    try:
        admin = await asyncpg.connect(maintenance_dsn(dsn), timeout=10)
    except Exception as exc:
        raise errors.translate(exc, query="restore connect") from exc
    try:
        exists = bool(await admin.fetchval(DATABASE_EXISTS, name))
        relations = await _relations(dsn) if exists else 0
        if relations and not force:
            raise DatabaseError(f"the target database {name} is not empty ({relations} relations); restore into "
                                "a new database with --target-db NAME, or pass --force to replace it once the "
                                "restored copy is verified", code=ErrorCode.DB_QUERY)
        staging = _side_name(name, "restore")
        staging_dsn = maintenance_dsn(dsn, staging)
        await admin.execute(create_database(staging))
        plain_dsn, env = split_dsn(staging_dsn)
        try:
            await run_tool("pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                           f"--dbname={plain_dsn}", str(file), env=env)
        except DatabaseError as exc:
            await admin.execute(drop_database(staging, force=True))
            raise DatabaseError(f"{exc.message}; {name} was not touched", code=exc.code) from exc
        try:
            counts = await _verify(staging_dsn, meta)
        except DatabaseError as exc:
            raise DatabaseError(f"{exc.message}; the restored copy is kept as {staging} for inspection and "
                                f"{name} was not touched", code=exc.code, **exc.context) from exc
        await _swap(admin, name, staging, replace=exists)
    except DatabaseError:
        raise
    except Exception as exc:
        raise errors.translate(exc, query="restore") from exc
    finally:
        await admin.close()
    _log.info("restore verified", extra={"database": name, "tables": len(counts)})
    return RestoreResult(name, counts)
