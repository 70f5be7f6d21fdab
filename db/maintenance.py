"""The periodic upkeep the clusters run, one at a time: retention, and binding old ciphertexts to their rows.

Every cluster calls :func:`run_maintenance` every minute or so (``shard/maintenance.py``). A session
advisory lock (:data:`LOCK_KEY`), held on one pooled connection, lets only one cluster work at a
time; the others find it taken and skip their turn. If the holder dies, its connection closes and
PostgreSQL releases the lock. Under the lock:

* **retention** (:func:`db.privacy.run_retention`) runs when the last run finished longer than
  ``retention_every`` ago (``maintenance_runs``), so it happens once per interval for the whole bot,
  however many clusters there are;
* the **row-binding upgrade** (:func:`db.privacy.upgrade_ciphertexts`) runs when the caller passes a
  key ring: each cluster does so until it has run it once since it started, so values written
  before row binding (or by a cluster still on older code during a rolling upgrade) are re-encrypted
  moments after the newest cluster starts.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pypika import Table
from pypika.terms import Function

from .privacy import RetentionPolicy, run_retention, upgrade_ciphertexts
from .sql import P1, P2, Now, PgQuery, built

if TYPE_CHECKING:
    from .crypto import KeyRing
    from .pool import Database

__all__ = ("LOCK_KEY", "MaintenanceReport", "run_maintenance", "RETENTION_JOB")

_log = logging.getLogger(__name__)

#: ``pg_try_advisory_lock`` key of the maintenance ("innkmain" in ASCII; the migrations use another).
LOCK_KEY = 0x696E6E6B6D61696E
RETENTION_JOB = "retention"

_runs = Table("maintenance_runs")
_TRY_LOCK = built(PgQuery.select(Function("pg_try_advisory_lock", P1)))
_UNLOCK = built(PgQuery.select(Function("pg_advisory_unlock", P1)))
_LAST = built(PgQuery.from_(_runs).select(_runs.finished_at).where(_runs.job == P1))
_FINISHED = built(
    PgQuery.into(_runs).columns(_runs.job, _runs.finished_at).insert(P1, P2)
    .on_conflict(_runs.job).do_update(_runs.finished_at, P2)
)
_NOW = built(PgQuery.select(Now()))


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one run did: rows deleted per table (``None``: retention was not due) and values upgraded."""

    deleted: dict[str, int] | None
    upgraded: dict[str, int] | None


async def run_maintenance(db: Database, policy: RetentionPolicy, *, retention_every: dt.timedelta,
                          upgrade_with: KeyRing | None = None, batch: int = 5000) -> MaintenanceReport | None:
    """Run what is due, unless another process is running it now (then ``None``).

    Parameters
    ----------
    policy:
        How long each table's rows are kept.
    retention_every:
        Retention runs when its last run finished at least this long ago.
    upgrade_with:
        Also bind values written before row binding to their rows, with this key ring.
    """
    async with db.acquire() as conn:
        if not await db.fetchval("maintenance.try_lock", _TRY_LOCK, LOCK_KEY, conn=conn):
            return None
        try:
            upgraded = None if upgrade_with is None else await upgrade_ciphertexts(db, upgrade_with, conn=conn)
            now: dt.datetime = await db.fetchval("maintenance.now", _NOW, conn=conn)
            last: dt.datetime | None = await db.fetchval("maintenance.last", _LAST, RETENTION_JOB, conn=conn)
            deleted = None
            if last is None or now - last >= retention_every:
                deleted = await run_retention(db, policy, now=now, batch=batch, conn=conn)
                await db.execute("maintenance.finished", _FINISHED, RETENTION_JOB, now, conn=conn)
        finally:
            await db.fetchval("maintenance.unlock", _UNLOCK, LOCK_KEY, conn=conn)
    return MaintenanceReport(deleted, upgraded)
