"""The stated retention actually happens: :class:`MaintenanceService` runs ``db.maintenance`` in every cluster.

Once the database is available, and then every ``tick_s`` seconds, each cluster calls
:func:`db.maintenance.run_maintenance`. An advisory lock lets one cluster at a time do the work, and
retention runs when its last run (by any cluster) is at least ``INNKEEPER_RETENTION_INTERVAL``
seconds old, so ``/privacy retention`` states what happens without any cron job. Each cluster also
binds values encrypted before row binding to their rows once after it starts (the first run where
it gets the lock). ``INNKEEPER_RETENTION_INTERVAL=0`` turns the service off (``innkeeper retention``
from cron then does it; ``/privacy retention`` says so).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Protocol

from db.maintenance import MaintenanceReport, run_maintenance
from innkeeper.errors import DatabaseError
from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from db.crypto import KeyRing
    from db.pool import Database
    from db.privacy import RetentionPolicy

__all__ = ("MaintenanceService", "DatabaseReady")

_log = logging.getLogger(__name__)


class DatabaseReady(Protocol):
    """The database's state (``shard.database.DatabaseService``)."""

    @property
    def available(self) -> bool: ...

    async def wait_available(self) -> None: ...


class MaintenanceService:
    """Retention and the row-binding upgrade, in turn with the other clusters (see the module docstring).

    Parameters
    ----------
    db:
        The database.
    database:
        Its state: the first run waits until it is available, later runs skip while it is not.
    key_ring:
        For the row-binding upgrade; without one there is nothing encrypted to upgrade.
    policy:
        How long each table's rows are kept.
    interval_s:
        Seconds between retention runs across the bot; 0 turns the service off.
    tick_s:
        Seconds between this cluster's attempts.
    """

    def __init__(self, db: Database, database: DatabaseReady, key_ring: KeyRing | None, policy: RetentionPolicy, *,
                 interval_s: float, tick_s: float = 60.0) -> None:
        self.db = db
        self.database = database
        self.key_ring = key_ring
        self.policy = policy
        self.interval_s = interval_s
        self.tick_s = min(tick_s, interval_s) if interval_s > 0 else tick_s
        self._upgrade_pending = key_ring is not None
        self._tasks = BackgroundTasks("maintenance")

    async def start(self) -> None:
        if self.interval_s <= 0:
            _log.info("INNKEEPER_RETENTION_INTERVAL is 0: retention is left to `innkeeper retention`")
            return
        self._tasks.every(self.tick_s, self.run_once, name="run", wait_first=self.database.wait_available,
                          on_error=self._failed)

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def run_once(self) -> MaintenanceReport | None:
        """One attempt; ``None`` when the database is unavailable or another cluster holds the lock."""
        if not self.database.available:
            return None
        report = await run_maintenance(self.db, self.policy, retention_every=dt.timedelta(seconds=self.interval_s),
                                       upgrade_with=self.key_ring if self._upgrade_pending else None)
        if report is None:
            return None
        if report.upgraded is not None:
            self._upgrade_pending = False
        if report.deleted is not None:
            _log.info("retention: deleted %d old rows", sum(report.deleted.values()), extra={"rows": report.deleted})
        return report

    @staticmethod
    def _failed(exc: Exception) -> None:
        if isinstance(exc, DatabaseError):
            _log.warning("maintenance failed, retried at the next tick: %s", exc)
        else:
            _log.error("maintenance failed", exc_info=exc)
