"""The query funnel's overhead over bare asyncpg, on the same pool and the same queries.

``python -m bench db_funnel [--queries N] [--runs R]``. Each run sends N queries one after another,
alternating bare ``pool.fetchrow`` and ``Database.fetchrow`` (metrics, slow-query check, error
translation) over the same three hot lookups. Runs come in back-to-back pairs (bare, funnel) whose
order alternates; the result is the median of the per-pair ratios, which resists the noise of a
shared machine better than a ratio of medians. Because a round trip on a busy machine is noisy, the funnel's own
CPU cost is also measured without I/O: the same calls against a connection that answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from bench._db_common import scratch_database
from db import guilds, permissions
from db.pool import Database
from db.sql import Sql

__all__ = ("bench", "main")

QUERIES: list[tuple[str, Sql]] = [
    ("guild_settings.get", guilds._GET),
    ("role_permissions.level_for_roles", permissions._LEVEL_FOR_ROLES),
    ("command_overrides.get", permissions._GET_OVERRIDE),
]


def _args(i: int) -> list[tuple[Any, ...]]:
    gid = i % 1000 + 1
    return [(gid,), (gid, [gid, gid + 1, gid + 2]), (gid, "cmd")]


async def _run(db: Database, n: int, funnel: bool) -> float:
    pool = db.pool
    start = time.perf_counter()
    for i in range(n // 3):
        for (name, sql), args in zip(QUERIES, _args(i), strict=True):
            if funnel:
                await db.fetchrow(name, sql, *args)
            else:
                await pool.fetchrow(sql, *args)
    return time.perf_counter() - start


class _InstantConn:
    """A connection that answers without I/O, to isolate the funnel's own cost."""

    async def fetchrow(self, sql: str, *args: Any, timeout: float | None = None) -> None:
        return None


class _InstantPool:
    def __init__(self) -> None:
        self.conn = _InstantConn()

    def acquire(self) -> Any:
        conn = self.conn

        class _Ctx:
            async def __aenter__(self) -> _InstantConn:
                return conn

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Ctx()


async def _cpu_overhead(n: int) -> tuple[float, float]:
    """Seconds per call: the funnel over an instant pool, and the bare instant pool."""
    db = Database("postgresql://unused/x")
    pool = _InstantPool()
    db._pool = pool  # type: ignore[assignment]
    sql = QUERIES[0][1]
    start = time.perf_counter()
    for _ in range(n):
        async with pool.acquire() as conn:
            await conn.fetchrow(sql, 1)
    bare = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        await db.fetchrow("guild_settings.get", sql, 1)
    return (time.perf_counter() - start) / n, bare


async def bench(n: int, runs: int) -> dict[str, Any]:
    async with scratch_database() as dsn, Database(dsn, min_size=1, max_size=1) as db:
        # fixtures, straight on the pool: the funnel takes only the application's built queries
        await db.pool.execute("INSERT INTO guilds (id) SELECT g FROM generate_series(1, 1000) g")
        await db.pool.execute("INSERT INTO guild_settings (guild_id, prefix) SELECT g, '?' "
                              "FROM generate_series(1, 1000) g")
        await db.pool.execute("INSERT INTO role_permissions (guild_id, role_id, level) SELECT g, g, 1 "
                              "FROM generate_series(1, 1000) g")
        await db.pool.execute("ANALYZE")
        await _run(db, 600, False)  # warm statement caches on both paths
        await _run(db, 600, True)
        bare: list[float] = []
        funnel: list[float] = []
        for i in range(runs):  # alternate which path goes first, so neither profits from the order
            for use_funnel in ((False, True) if i % 2 == 0 else (True, False)):
                (funnel if use_funnel else bare).append(await _run(db, n, use_funnel))
    cpu = [await _cpu_overhead(20_000) for _ in range(5)]
    cpu_funnel = statistics.median(c[0] for c in cpu)
    cpu_bare = statistics.median(c[1] for c in cpu)
    ratios = [f / b for b, f in zip(bare, funnel, strict=True)]
    b, f = statistics.median(bare), statistics.median(funnel)
    per_query = n // 3 * 3
    return {"benchmark": "db_funnel", "queries_per_run": per_query, "pairs": runs,
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)],
            "bare_us_per_query": round(b / per_query * 1e6, 1), "funnel_us_per_query": round(f / per_query * 1e6, 1),
            "funnel_cpu_us_per_call": round((cpu_funnel - cpu_bare) * 1e6, 2)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench db_funnel")
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=21, help="pairs of runs")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.queries, args.runs))
    print(json.dumps(result))
    print(f"funnel/bare = {result['ratio_median']} (median of {args.runs} pairs of {result['queries_per_run']} "
          f"queries, quartiles {result['ratio_quartiles']}; bare {result['bare_us_per_query']} µs per query); "
          f"funnel CPU cost without I/O: {result['funnel_cpu_us_per_call']} µs per call")
    return 0
