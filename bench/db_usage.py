"""Batched command-usage writes (UsageRecorder, one jsonb_to_recordset INSERT per flush) against one INSERT per use.

``python -m bench db_usage [--rows N] [--single-rows M] [--runs R]``. Both paths go through the
funnel on the same pool; rows/s include buffering (``record()``) for the batched path.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

from bench._db_common import scratch_database
from db.pool import Database
from db.usage import INSERT_ONE, UsageRecorder

__all__ = ("bench", "main")


async def _batched(db: Database, n: int) -> float:
    rec = UsageRecorder(db, interval=3600)
    start = time.perf_counter()
    for i in range(n):
        rec.record(user_id=i % 5000, command=f"cmd{i % 40}", guild_id=i % 300, channel_id=i, success=True,
                   latency_ms=12.5, cluster_id=0, shard_id=i % 4)
    await rec.flush()
    return time.perf_counter() - start


async def _single(db: Database, n: int) -> float:
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    for i in range(n):
        await db.execute("command_usage.insert_one", INSERT_ONE, now, i % 300, i, i % 5000, f"cmd{i % 40}", 0, i % 4,
                         True, 12.5)
    return time.perf_counter() - start


async def bench(rows: int, single_rows: int, runs: int) -> dict[str, Any]:
    async with scratch_database() as dsn, Database(dsn, min_size=1, max_size=2) as db:
        await _batched(db, 1000)
        await _single(db, 200)
        batched = [rows / await _batched(db, rows) for _ in range(runs)]
        single = [single_rows / await _single(db, single_rows) for _ in range(runs)]
        total = await db.pool.fetchval("SELECT count(*) FROM command_usage")  # a check, not an app query
    assert total == 1200 + runs * (rows + single_rows)
    b, s = statistics.median(batched), statistics.median(single)
    return {"benchmark": "db_usage", "runs": runs, "batched_rows": rows, "single_rows": single_rows,
            "batched_rows_per_s": round(b), "single_rows_per_s": round(s), "speedup": round(b / s, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench db_usage")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--single-rows", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.rows, args.single_rows, args.runs))
    print(json.dumps(result))
    print(f"batched: {result['batched_rows_per_s']} rows/s, one INSERT per use: {result['single_rows_per_s']} rows/s "
          f"(x{result['speedup']}, median of {args.runs} runs)")
    return 0
