"""Shared by the database benchmarks: a throw-away migrated database on the configured server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from db.migrate import maintenance_dsn, migrate

__all__ = ("scratch_database",)


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A fresh, migrated database on DATABASE_URL's server (default 127.0.0.1:5432), dropped afterwards."""
    base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/innkeeper")
    name = f"ikbench_{uuid.uuid4().hex[:12]}"
    dsn = maintenance_dsn(base, name)
    await migrate(dsn)
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(maintenance_dsn(base))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
