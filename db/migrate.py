"""Versioned migrations: ``sql/V{n}__name.sql``, applied in order, each in its own transaction.

* ``schema_migrations(version, name, checksum, applied_at)`` records what ran; ``checksum`` is
  the SHA-256 of the file's bytes. A file edited after it was applied is refused with an error
  that names it (``DB_MIGRATION``): write a new migration instead.
* The whole run holds a session-level advisory lock (:data:`LOCK_KEY`), so clusters and operators
  that start ``innkeeper migrate`` together queue up; the second one finds nothing left to do.
* :func:`ensure_database` creates the database itself when it does not exist yet (connecting to the
  ``postgres`` maintenance database), tolerating a concurrent creator.
* :func:`require_schema` is what clusters call at start-up: it refuses to run code that needs a
  newer schema than the database has (``DB_SCHEMA_OUTDATED``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from pypika import Column, Table
from pypika.functions import Max
from pypika.terms import Function

from innkeeper.errors import DatabaseError, ErrorCode
from innkeeper.redact import redact_url
from innkeeper.settings import PROJECT_ROOT

from . import error_translation as errors
from .sql import P1, P2, P3, Coalesce, Now, PgQuery, built, create_database, quote_ident

if TYPE_CHECKING:
    from .pool import Conn, Database

__all__ = (
    "LOCK_KEY", "MIGRATIONS_DIR", "REQUIRED_SCHEMA_VERSION", "Migration", "MigrationReport", "discover", "migrate",
    "ensure_database", "current_version", "require_schema", "quote_ident", "database_name", "maintenance_dsn",
    "TABLE_EXISTS", "SELECT_APPLIED", "DATABASE_EXISTS",
)

_log = logging.getLogger(__name__)

#: The latest migration this code base needs. Bump it with every new ``sql/V{n}__*.sql``.
REQUIRED_SCHEMA_VERSION = 6
#: ``pg_advisory_lock`` key held while migrating ("innkeepr" in ASCII).
LOCK_KEY = 0x696E6E6B65657072
MIGRATIONS_DIR = PROJECT_ROOT / "sql"

_FILE_RE = re.compile(r"^V(?P<version>[1-9][0-9]*)__(?P<name>[A-Za-z0-9_]+)\.sql$")

_migrations = Table("schema_migrations")
_CREATE_TABLE = built(
    PgQuery.create_table(_migrations).if_not_exists()
    .columns(Column("version", "integer"), Column("name", "text", nullable=False),
             Column("checksum", "text", nullable=False),
             Column("applied_at", "timestamptz", nullable=False, default=Now()))
    .primary_key("version")
)
SELECT_APPLIED = built(
    PgQuery.from_(_migrations).select(_migrations.version, _migrations.name, _migrations.checksum)
    .orderby(_migrations.version)
)
_INSERT_APPLIED = built(
    PgQuery.into(_migrations).columns(_migrations.version, _migrations.name, _migrations.checksum).insert(P1, P2, P3)
)
#: Whether ``schema_migrations`` exists (a database never migrated has none).
TABLE_EXISTS = built(PgQuery.select(Function("to_regclass", "public.schema_migrations").isnotnull()))
_MAX_VERSION = built(PgQuery.from_(_migrations).select(Coalesce(Max(_migrations.version), 0)))
_LOCK = built(PgQuery.select(Function("pg_advisory_lock", P1)))
_UNLOCK = built(PgQuery.select(Function("pg_advisory_unlock", P1)))
_pg_database = Table("pg_database")
#: Whether the database $1 exists (asked of the maintenance database).
DATABASE_EXISTS = built(PgQuery.from_(_pg_database).select(1).where(_pg_database.datname == P1))


@dataclass(frozen=True, slots=True)
class Migration:
    """One ``V{n}__name.sql`` file."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(slots=True)
class MigrationReport:
    """What a :func:`migrate` run found and did."""

    applied: list[Migration]
    pending: list[Migration]
    version_before: int
    version_after: int
    created_database: bool = False


def discover(directory: Path | None = None) -> list[Migration]:
    """Read every migration in ``directory`` (default ``sql/``), ordered by version.

    Raises
    ------
    DatabaseError
        ``DB_MIGRATION`` for a misnamed ``.sql`` file or two files with one version.
    """
    directory = directory or MIGRATIONS_DIR
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise DatabaseError(f"migration file {path.name} is not named V<n>__<name>.sql",
                                code=ErrorCode.DB_MIGRATION, path=str(path))
        version = int(match["version"])
        if version in found:
            raise DatabaseError(f"migrations {found[version].filename} and {path.name} share version {version}",
                                code=ErrorCode.DB_MIGRATION)
        data = path.read_bytes()
        found[version] = Migration(version, match["name"], path, data.decode("utf-8"),
                                   hashlib.sha256(data).hexdigest())
    return [found[v] for v in sorted(found)]


def database_name(dsn: str) -> str:
    """The database named in ``dsn`` (``postgresql://host/NAME``)."""
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    if not name:
        raise DatabaseError(f"DATABASE_URL names no database: {redact_url(dsn)}", code=ErrorCode.DB_UNAVAILABLE)
    return name


def maintenance_dsn(dsn: str, database: str = "postgres") -> str:
    """``dsn`` pointed at another database on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` when it is missing; True when this call created it."""
    name = database_name(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        pass
    except Exception as exc:
        raise errors.translate(exc, query="connect") from exc
    else:
        await conn.close()
        return False
    try:
        admin = await asyncpg.connect(maintenance_dsn(dsn), timeout=10)
    except Exception as exc:
        raise errors.translate(exc, query="connect maintenance database") from exc
    try:
        exists = await admin.fetchval(DATABASE_EXISTS, name)
        if exists:
            return False
        try:
            await admin.execute(create_database(name))
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # a concurrent runner won the race
        _log.info("created database %s", name)
        return True
    except DatabaseError:
        raise
    except Exception as exc:
        raise errors.translate(exc, query="create database") from exc
    finally:
        await admin.close()


async def _applied(conn: Conn) -> dict[int, tuple[str, str]]:
    if not await conn.fetchval(TABLE_EXISTS):
        return {}
    return {r["version"]: (r["name"], r["checksum"]) for r in await conn.fetch(SELECT_APPLIED)}


def _check_checksums(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    for m in migrations:
        if m.version in applied and applied[m.version][1] != m.checksum:
            raise DatabaseError(
                f"migration {m.filename} was edited after it was applied (checksum {m.checksum[:12]}… differs "
                f"from the applied {applied[m.version][1][:12]}…); restore the file and add a new migration instead",
                code=ErrorCode.DB_MIGRATION, migration=m.filename,
            )


async def migrate(dsn: str, *, directory: Path | None = None, dry_run: bool = False,
                  create_database: bool = True) -> MigrationReport:
    """Apply every pending migration to the database at ``dsn``.

    Parameters
    ----------
    dsn:
        The target database.
    directory:
        Where the ``V{n}__name.sql`` files are (default: the project's ``sql/``).
    dry_run:
        Only report what would run; nothing is created or changed.
    create_database:
        Create the database first when it does not exist.

    Raises
    ------
    DatabaseError
        ``DB_MIGRATION`` for an edited or failing migration (the error names the file; that
        migration's transaction is rolled back, earlier ones stay applied), ``DB_UNAVAILABLE``
        when the server cannot be reached.
    """
    migrations = discover(directory)
    created = False
    if dry_run:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
        except asyncpg.InvalidCatalogNameError:
            return MigrationReport([], migrations, 0, 0)
        except Exception as exc:
            raise errors.translate(exc, query="connect") from exc
        try:
            applied = await _applied(conn)
        finally:
            await conn.close()
        _check_checksums(migrations, applied)
        before = max(applied, default=0)
        return MigrationReport([], [m for m in migrations if m.version not in applied], before, before)

    if create_database:
        created = await ensure_database(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except Exception as exc:
        raise errors.translate(exc, query="connect") from exc
    try:
        await conn.execute(_LOCK, LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            applied = await _applied(conn)
            _check_checksums(migrations, applied)
            before = max(applied, default=0)
            unknown = sorted(set(applied) - {m.version for m in migrations})
            if unknown:
                _log.warning("the database has migrations this code does not know: %s", unknown)
            pending = [m for m in migrations if m.version not in applied]
            done: list[Migration] = []
            for m in pending:
                _log.info("applying migration %s", m.filename)
                try:
                    async with conn.transaction():
                        await conn.execute(m.sql)
                        await conn.execute(_INSERT_APPLIED, m.version, m.name, m.checksum)
                except Exception as exc:
                    raise DatabaseError(f"migration {m.filename} failed: {str(exc).splitlines()[0]}",
                                        code=ErrorCode.DB_MIGRATION, migration=m.filename) from exc
                done.append(m)
            after = max([before, *(m.version for m in done)])
            return MigrationReport(done, pending, before, after, created)
        finally:
            await conn.execute(_UNLOCK, LOCK_KEY)
    except DatabaseError:
        raise
    except Exception as exc:
        raise errors.translate(exc, query="migrate") from exc
    finally:
        await conn.close()


async def current_version(db: Database, *, conn: Conn | None = None) -> int:
    """The highest applied migration, 0 for a database never migrated."""
    if not await db.fetchval("schema_migrations_exists", TABLE_EXISTS, conn=conn):
        return 0
    return int(await db.fetchval("schema_version", _MAX_VERSION, conn=conn))


async def require_schema(db: Database, minimum_version: int = REQUIRED_SCHEMA_VERSION) -> int:
    """Refuse to start on a schema older than ``minimum_version``; returns the current version.

    Raises
    ------
    DatabaseError
        ``DB_SCHEMA_OUTDATED`` naming the current and the needed version.
    """
    version = await current_version(db)
    if version < minimum_version:
        raise DatabaseError(
            f"the database schema is at version {version} but this code needs version {minimum_version}: "
            "run `innkeeper migrate`",
            code=ErrorCode.DB_SCHEMA_OUTDATED, current=version, required=minimum_version,
            user_message="The bot is being upgraded; please try again shortly.",
        )
    return version
