"""Test helpers for code that uses the database (a pytest-free plugin in the spirit of Red's).

:func:`migrated` opens a :class:`~db.pool.Database` on a database that has every migration
applied; tests pair it with the ``database_url`` fixture, which creates and drops the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .crypto import KeyRing
from .migrate import migrate
from .pool import Database

__all__ = ("migrated", "make_keys")


@asynccontextmanager
async def migrated(dsn: str, **options: object) -> AsyncIterator[Database]:
    """A connected :class:`Database` on ``dsn`` after applying every migration; closed afterwards."""
    await migrate(dsn)
    db = Database(dsn, min_size=1, max_size=4, **options)  # type: ignore[arg-type]
    await db.connect()
    try:
        yield db
    finally:
        await db.close()


def make_keys(*ids: str) -> KeyRing:
    """A key ring with deterministic keys named ``ids`` (default ``("t1",)``), the first current."""
    import base64
    import hashlib

    ids = ids or ("t1",)
    return KeyRing.parse([f"{i}={base64.b64encode(hashlib.sha256(i.encode()).digest()).decode()}" for i in ids])
