"""The cluster's database connection, and what the commands may assume of it.

:class:`DatabaseService` connects the process's pool when the cluster starts. Start-up policy:

* PostgreSQL unreachable does not stop the cluster: it keeps connecting in the background with
  backoff. Meanwhile the core commands run with the default guild configuration and every other
  command answers "the database is unavailable" (fail closed), and reminders wait.
* A schema older than this code needs stops the cluster (``innkeeper migrate`` first); found only
  on a background reconnect, it leaves the database-backed commands off and says so.


:attr:`DatabaseService.schema_version` is ``None`` until the pool is connected and the schema
checked; consumers (the reminder service) look at it rather than at the pool, or wait for it
(:meth:`DatabaseService.wait_available`, the maintenance service).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from db.migrate import require_schema
from innkeeper.backoff import Backoff
from innkeeper.errors import DatabaseError, ErrorCode
from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from db.pool import Database

__all__ = ("DatabaseService",)

_log = logging.getLogger(__name__)


class DatabaseService:
    """Connects the cluster's database pool (see the module docstring).

    Parameters
    ----------
    db:
        The process's pool (owned by the :class:`~shard.context.ClusterContext`, which closes it).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        #: The schema version once connected and checked; None while the database is unavailable.
        self.schema_version: int | None = None
        self._tasks = BackgroundTasks("database")
        self._available = asyncio.Event()

    @property
    def available(self) -> bool:
        return self.schema_version is not None

    async def wait_available(self) -> None:
        """Wait until the pool is connected and the schema checked (forever, if it never is)."""
        await self._available.wait()

    async def start(self) -> None:
        """Connect, or keep connecting in the background.

        Raises
        ------
        DatabaseError
            ``DB_SCHEMA_OUTDATED`` (or any failure but unavailability): the cluster must not run.
        """
        try:
            await self.db.connect()
        except DatabaseError as exc:
            if exc.code is not ErrorCode.DB_UNAVAILABLE:
                raise
            _log.warning("database unavailable at start-up (%s); core commands only until it is back", exc)
            self._tasks.spawn(self._keep_connecting(), name="connect")
        else:
            self.schema_version = await require_schema(self.db)
            self._available.set()

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def _keep_connecting(self) -> None:
        backoff = Backoff(1.0, 30.0)
        while True:
            await asyncio.sleep(backoff.next())
            try:
                await self.db.connect()
                self.schema_version = await require_schema(self.db)
            except DatabaseError as exc:
                if exc.code is ErrorCode.DB_SCHEMA_OUTDATED:
                    _log.critical("%s; commands that need the database stay off", exc)
                    await self.db.close()
                    return
                _log.info("database still unavailable (%s); next try in %.0f s", exc, backoff.ceiling())
                continue
            _log.info("database connected (schema version %s)", self.schema_version)
            self._available.set()
            return
