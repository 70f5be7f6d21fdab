"""What one throttle hit costs the cluster's CPU: alone, concurrent, and batched per turn of the loop.

``python -m bench redis_batching [--hits 4000] [--runs 3] [--redis URL]``

Every figure is the CPU time of this process (``time.process_time``) per hit of the throttle's Lua
script against a real Redis, on uvloop as a cluster runs, under a throwaway key prefix:

- ``alone``: one ``AsyncScript`` call at a time, awaited (redis-py's own path, what the throttle did
  before :mod:`ipc.script_batch`);
- ``gather N``: N ``AsyncScript`` calls awaited together (each still its own round trip);
- ``batch N``: N hits of :class:`~ipc.throttle.RedisThrottle` made in one turn of the loop, which
  :class:`~ipc.script_batch.ScriptBatch` sends in one pipeline;
- ``batch alone``: the throttle one hit at a time (the batch of one: what a quiet cluster pays).

Medians of ``--runs`` runs. The script's own work in Redis is on Redis's CPU, not counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from ipc.keys import Keys
from ipc.throttle import _HIT, RedisThrottle
from shard.pipeline.throttling import ThrottleRule

from ._procs import delete_redis_prefix

__all__ = ("main",)

RULE = (ThrottleRule(5, 10.0, "user"),)


async def _cpu_per_hit(hits: int, group: int, make: Callable[[int], Awaitable[Any]]) -> float:
    started = time.process_time()
    for first in range(0, hits, group):
        await asyncio.gather(*(make(first + j) for j in range(group)))
    return (time.process_time() - started) / hits * 1e6


async def _run(url: str, hits: int, runs: int) -> dict[str, Any]:
    prefix = f"ikb-batch-{uuid.uuid4().hex[:8]}"
    redis = aioredis.from_url(url)
    script = redis.register_script(_HIT)
    throttle = RedisThrottle(redis, Keys(prefix), op_timeout=10.0)
    figures: dict[str, list[float]] = {}
    try:
        for _ in range(runs):
            for name, group, make in (
                ("alone", 1, lambda i: script(keys=[f"{prefix}:a:{i}"], args=[uuid.uuid4().hex, "5", "10000"])),
                ("gather 4", 4, lambda i: script(keys=[f"{prefix}:g:{i}"], args=[uuid.uuid4().hex, "5", "10000"])),
                ("batch alone", 1, lambda i: throttle.hit("ping", i, 1, RULE)),
                ("batch 2", 2, lambda i: throttle.hit("ping", i, 1, RULE)),
                ("batch 4", 4, lambda i: throttle.hit("ping", i, 1, RULE)),
                ("batch 8", 8, lambda i: throttle.hit("ping", i, 1, RULE)),
            ):
                figures.setdefault(name, []).append(await _cpu_per_hit(hits, group, make))
                await delete_redis_prefix(prefix)
        assert throttle.shared, "the throttle fell back to per-process counting: the figures are not Redis's"
    finally:
        await throttle.stop()
        await delete_redis_prefix(prefix)
        await redis.aclose()
    return {"hits": hits, "runs": runs, "cpu_us_per_hit": {k: statistics.median(v) for k, v in figures.items()},
            "runs_us": figures}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench redis_batching", description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    import uvloop

    out = uvloop.run(_run(args.redis, args.hits, args.runs))
    print(f"redis_batching: {args.hits} hits per figure, medians of {args.runs} runs (CPU µs of this process per hit)")
    for name, value in out["cpu_us_per_hit"].items():
        runs = ", ".join(f"{v:.0f}" for v in out["runs_us"][name])
        print(f"  {name:12s} {value:6.1f} µs   ({runs})")
    print(f"  host: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
