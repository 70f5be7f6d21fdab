"""Test helpers for code that uses the database (a pytest-free plugin in the spirit of Red's).

:func:`migrated` opens a :class:`~db.pool.Database` on a database that has every migration
applied; tests pair it with the ``database_url`` fixture, which creates and drops the database.
:func:`sql_constants` finds every SQL text the ``db`` modules hold, for tests that check them all.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from .crypto import KeyRing
from .migrate import migrate
from .pool import Database

__all__ = ("migrated", "make_keys", "legacy_value", "sql_constants", "looks_like_sql")


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


def _test_key(key_id: str) -> bytes:
    import hashlib

    return hashlib.sha256(key_id.encode()).digest()


def make_keys(*ids: str) -> KeyRing:
    """A key ring with deterministic keys named ``ids`` (default ``("t1",)``), the first current."""
    import base64

    ids = ids or ("t1",)
    return KeyRing.parse([f"{i}={base64.b64encode(_test_key(i)).decode()}" for i in ids])


def legacy_value(key_id: str, plaintext: str, context: str) -> str:
    """A value as stored before row binding (``v1:``, the column its only associated data), under
    :func:`make_keys`' key ``key_id``: what a database upgraded from before V6 holds."""
    import base64
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    ct = AESGCM(_test_key(key_id)).encrypt(nonce, plaintext.encode(), context.encode())
    return f"v1:{key_id}:{base64.b64encode(nonce).decode()}:{base64.b64encode(ct).decode()}"


_SQL_START = re.compile(r"^[\s(]*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|LOCK|COPY)\b", re.IGNORECASE)


def looks_like_sql(text: str) -> bool:
    """Whether ``text`` starts like an SQL statement (also ``(SELECT ...) UNION ...``)."""
    return bool(_SQL_START.match(text))


def _walk(where: str, value: object) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if looks_like_sql(value):
            yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(f"{where}[{key!r}]", item)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _walk(f"{where}[{i}]", item)


def sql_constants() -> dict[str, str]:
    """Every SQL text held at module level in the ``db`` package, as ``{"module.NAME[key]": text}``.

    Module constants are searched, and so are the tuples, lists and dicts they hold (not sets: the
    registry of built SQL in :mod:`db.sql` is one).
    """
    import db

    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(db.__path__):
        module = importlib.import_module(f"db.{info.name}")
        for name, value in vars(module).items():
            if not name.startswith("__"):
                found.update(_walk(f"{info.name}.{name}", value))
    return found
