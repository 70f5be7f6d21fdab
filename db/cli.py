"""``innkeeper`` subcommands for the database.

``migrate [--dry-run]``, ``backup``, ``restore FILE [--target-db NAME] [--force]``,
``retention [--dry-run]``, ``rotate-keys``, ``keygen [KEY_ID]``, ``audit-verify [--guild ID]``,
``export-user USER_ID [--output FILE]``, ``erase-user USER_ID --yes`` and ``pseudonym USER_ID``. Handlers follow
:mod:`cluster.innkeeper_cli`'s contract: ``(args, settings) -> int``; errors are raised as
:class:`~innkeeper.errors.InnkeeperError` and become one line on stderr with exit code 1
(2 for bad usage).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from innkeeper.errors import UsageError

if TYPE_CHECKING:
    from innkeeper.settings import Settings

__all__ = ("add_commands",)


def _snowflake(value: str) -> int:
    if not value.isdigit() or int(value) >= 2**63:
        raise argparse.ArgumentTypeError(f"not a Discord id: {value!r}")
    return int(value)


def add_commands(sub: Any) -> None:
    """Add the database subcommands to the ``innkeeper`` parser."""
    p = sub.add_parser("migrate", help="apply pending sql/V{n}__*.sql migrations (creates the database if missing)")
    p.add_argument("--dry-run", action="store_true", help="list what would run; change nothing")
    p.set_defaults(handler=_migrate)

    p = sub.add_parser("backup", help="pg_dump the database into INNKEEPER_BACKUP_DIR, keeping the newest N")
    p.set_defaults(handler=_backup)

    p = sub.add_parser("restore", help="restore a backup into a fresh database and verify it")
    p.add_argument("file", type=Path, help="an innkeeper-*.dump file (its .json sidecar must be beside it)")
    p.add_argument("--target-db", metavar="NAME", help="restore into this database (default: DATABASE_URL's)")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty target, once the restored copy is verified")
    p.set_defaults(handler=_restore)

    p = sub.add_parser("retention", help="delete data older than INNKEEPER_RETENTION_*_DAYS")
    p.set_defaults(handler=_retention)

    p = sub.add_parser("rotate-keys", help="re-encrypt stored text under the first INNKEEPER_ENCRYPTION_KEYS key, "
                                           "bound to its row")
    p.set_defaults(handler=_rotate)

    p = sub.add_parser("keygen", help="print a new keyid=base64key (INNKEEPER_ENCRYPTION_KEYS, INNKEEPER_IPC_KEYS, "
                                      "INNKEEPER_PSEUDONYM_KEY)")
    p.add_argument("key_id", nargs="?", default=None, help="the key id (default: k<unix time>)")
    p.set_defaults(handler=_keygen)

    p = sub.add_parser("audit-verify", help="verify the audit log's hash chains")
    p.add_argument("--guild", type=_snowflake, metavar="ID", help="only this guild's chain")
    p.set_defaults(handler=_audit_verify)

    p = sub.add_parser("export-user", help="print every stored row about a user as JSON")
    p.add_argument("user_id", type=_snowflake)
    p.add_argument("--output", type=Path, help="write to this file instead of stdout")
    p.set_defaults(handler=_export)

    p = sub.add_parser("erase-user", help="erase a user from every table (in the audit log: a pseudonym instead)")
    p.add_argument("user_id", type=_snowflake)
    p.add_argument("--yes", action="store_true", help="confirm; nothing happens without it")
    p.set_defaults(handler=_erase)

    p = sub.add_parser("pseudonym", help="print the pseudonym an erased user has in the audit log")
    p.add_argument("user_id", type=_snowflake)
    p.set_defaults(handler=_pseudonym)


async def _connected(settings: Settings, *, require: bool = True) -> Any:
    from .migrate import require_schema
    from .pool import Database

    db = await Database.from_settings(settings, min_size=1, max_size=2, connect_timeout=10).connect()
    if require:
        try:
            await require_schema(db)
        except BaseException:
            await db.close()
            raise
    return db


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from .migrate import database_name, migrate

    report = await migrate(settings.database_url, dry_run=args.dry_run)
    name = database_name(settings.database_url)
    if report.created_database:
        print(f"created database {name}")
    if args.dry_run:
        for m in report.pending:
            print(f"would apply {m.filename}")
        print(f"{name}: schema at version {report.version_before}, {len(report.pending)} migration(s) pending")
        return 0
    for m in report.applied:
        print(f"applied {m.filename}")
    print(f"{name}: schema at version {report.version_after}"
          + ("" if report.applied else " (nothing to do)"))
    return 0


async def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from .backup import backup

    result = await backup(settings.database_url, settings.backup_dir, keep=settings.backup_keep)
    rows = sum(result.counts.values())
    print(f"wrote {result.path} ({result.size} bytes, {len(result.counts)} tables, {rows} rows)")
    for old in result.pruned:
        print(f"removed old backup {old.name}")
    return 0


async def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from .migrate import maintenance_dsn
    from .restore import restore

    dsn = settings.database_url if not args.target_db else maintenance_dsn(settings.database_url, args.target_db)
    result = await restore(dsn, args.file, force=args.force)
    print(f"restored {args.file.name} into {result.database}: {len(result.counts)} tables, "
          f"{sum(result.counts.values())} rows, verified against the backup")
    return 0


async def _retention(args: argparse.Namespace, settings: Settings) -> int:
    from .privacy import RetentionPolicy, run_retention

    db = await _connected(settings)
    try:
        deleted = await run_retention(db, RetentionPolicy.from_settings(settings))
    finally:
        await db.close()
    for table, n in deleted.items():
        print(f"{table}: deleted {n} rows")
    return 0


async def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from .crypto import KeyRing
    from .privacy import rotate_keys

    keys = KeyRing.from_settings(settings)
    db = await _connected(settings)
    try:
        done = await rotate_keys(db, keys)
    finally:
        await db.close()
    for column, n in done.items():
        print(f"{column}: re-encrypted {n} values under key {keys.current}")
    return 0


def _keygen(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from .crypto import generate_key

    print(generate_key(args.key_id or f"k{int(time.time())}"))
    return 0


async def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from .audit import verify

    db = await _connected(settings)
    try:
        result = await verify(db, guild_id=args.guild, all_chains=args.guild is None)
    finally:
        await db.close()
    for problem in result.problems:
        print(str(problem), file=sys.stderr)
    verdict = "OK" if result.ok else f"{len(result.problems)} problem(s)"
    print(f"{result.chains} chain(s), {result.rows} row(s): {verdict}")
    return 0 if result.ok else 1


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from .crypto import KeyRing
    from .privacy import export_user

    keys = KeyRing.from_settings(settings)
    db = await _connected(settings)
    try:
        data = await export_user(db, keys, args.user_id)
    finally:
        await db.close()
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        from innkeeper.files import write_private

        write_private(args.output, text)  # decrypted personal data: mode 0600, a missing directory 0700
    else:
        sys.stdout.write(text)
    return 0


def _pseudonyms(settings: Settings) -> Any:
    from .crypto import KeyRing
    from .pseudonyms import Pseudonyms

    return Pseudonyms.from_settings(settings, KeyRing.from_settings(settings) if settings.encryption_keys else None)


def _pseudonym(args: argparse.Namespace, settings: Settings) -> int:
    print(_pseudonyms(settings).of(args.user_id))
    return 0


async def _erase(args: argparse.Namespace, settings: Settings) -> int:
    from .privacy import erase_user

    if not args.yes:
        raise UsageError(f"erase-user deletes user {args.user_id}'s data for good; add --yes to confirm")
    pseudonyms = _pseudonyms(settings)
    db = await _connected(settings)
    try:
        counts = await erase_user(db, args.user_id, pseudonyms=pseudonyms)
    finally:
        await db.close()
    print(f"erased user {args.user_id}: " + ", ".join(f"{k}={n}" for k, n in counts.items()))
    return 0
