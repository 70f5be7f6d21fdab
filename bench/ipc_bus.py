"""IPC bus latency: request/response and broadcast-gather over N clusters.

``python -m bench ipc_bus [--clusters 8] [--requests 2000] [--gathers 300] [--inprocess]``

By default every cluster is its own process (``python -m bench.ipc_bus --serve ID``), each with a
:class:`~ipc.bus.Bus` and a registry answering ``echo`` and ``guild_count``, as a real cluster
would; the requester is this process, identity ``cli-bench``. ``--inprocess`` runs the clusters
as Bus instances in this process instead (one event loop: cheaper, but it measures less).

It reports p50/p90/p99 of sequential request/response round trips, of sequential broadcast-gathers
over every cluster, and the throughput of concurrent requests. Redis: ``REDIS_URL`` or
``--redis``; keys live under a throwaway prefix, deleted at the end. Frames are signed as in
production, with ``INNKEEPER_IPC_KEYS`` (the public ``dev`` key when it is not set).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from typing import Any

import msgpack
import redis.asyncio as aioredis

from innkeeper.settings import PROJECT_ROOT
from ipc.bus import Bus
from ipc.keys import Keys
from ipc.registry import HandlerRegistry
from ipc.signing import FrameSigner

__all__ = ("main",)


def _signer() -> FrameSigner:
    return FrameSigner.parse((os.environ.get("INNKEEPER_IPC_KEYS") or "dev").split(","), allow_dev=True)


def _registry(cluster_id: int) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("echo")
    async def echo(args: dict[str, Any]) -> dict[str, Any]:
        return args

    @registry.handler("guild_count")
    async def guild_count(args: dict[str, Any]) -> int:
        return 1000 + cluster_id

    return registry


async def _serve(cluster_id: int, redis_url: str, prefix: str) -> None:
    redis = aioredis.from_url(redis_url)
    keys = Keys(prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Bus(redis, keys, cluster_id, signer=_signer(), registry=_registry(cluster_id)):
        await redis.set(keys.heartbeat(cluster_id), msgpack.packb({"cluster_id": cluster_id}), ex=300)
        print("ready", flush=True)
        await stop.wait()
    await redis.aclose()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(_pct(ms, 50), 3), "p90_ms": round(_pct(ms, 90), 3),
            "p99_ms": round(_pct(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3)}


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-ipc-{uuid.uuid4().hex[:8]}"
    redis = aioredis.from_url(args.redis)
    keys = Keys(prefix)
    procs: list[asyncio.subprocess.Process] = []
    local: list[Bus] = []
    try:
        if args.inprocess:
            for cid in range(args.clusters):
                bus = Bus(redis, keys, cid, signer=_signer(), registry=_registry(cid))
                await bus.start()
                local.append(bus)
        else:
            for cid in range(args.clusters):
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.ipc_bus", "--serve", str(cid), "--redis", args.redis,
                    "--prefix", prefix, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE))
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                if line.strip() != b"ready":
                    raise RuntimeError(f"a cluster process failed to start: {line!r}")
        everyone = set(range(args.clusters))
        async with Bus(redis, keys, "cli-bench", signer=_signer()) as cli:
            for i in range(50):  # warm up connections and scripts
                await cli.request(i % args.clusters, "echo", {"n": i})
            rr: list[float] = []
            for i in range(args.requests):
                start = time.perf_counter()
                await cli.request(i % args.clusters, "echo", {"n": i, "payload": "x" * 64})
                rr.append(time.perf_counter() - start)
            gathers: list[float] = []
            incomplete = 0
            for _ in range(args.gathers):
                start = time.perf_counter()
                result = await cli.broadcast_gather("guild_count", expected=everyone, timeout=5)
                gathers.append(time.perf_counter() - start)
                incomplete += 0 if result.ok else 1
            concurrent = 50
            total = args.requests
            start = time.perf_counter()
            sem = asyncio.Semaphore(concurrent)

            async def one(i: int) -> None:
                async with sem:
                    await cli.request(i % args.clusters, "echo", {"n": i})

            await asyncio.gather(*(one(i) for i in range(total)))
            elapsed = time.perf_counter() - start
        return {
            "clusters": args.clusters, "mode": "in-process" if args.inprocess else "one process per cluster",
            "request_response": _summary(rr), "broadcast_gather": {**_summary(gathers), "incomplete": incomplete},
            "concurrent_requests_per_s": round(total / elapsed), "concurrency": concurrent,
        }
    finally:
        for bus in local:
            await bus.stop()
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        doomed = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if doomed:
            await redis.delete(*doomed)
        await redis.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ipc_bus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--gathers", type=int, default=300)
    parser.add_argument("--inprocess", action="store_true", help="run the clusters in this process")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        asyncio.run(_serve(args.serve, args.redis, args.prefix))
        return 0
    result = asyncio.run(_bench(args))
    rr, bg = result["request_response"], result["broadcast_gather"]
    print(f"IPC bus, {result['clusters']} clusters ({result['mode']})")
    print(f"  request/response:        p50 {rr['p50_ms']:.2f} ms  p90 {rr['p90_ms']:.2f} ms  p99 {rr['p99_ms']:.2f} ms"
          f"  (n={rr['n']})")
    print(f"  broadcast-gather (all):  p50 {bg['p50_ms']:.2f} ms  p90 {bg['p90_ms']:.2f} ms  p99 {bg['p99_ms']:.2f} ms"
          f"  (n={bg['n']}, incomplete {bg['incomplete']})")
    print(f"  concurrent requests:     {result['concurrent_requests_per_s']}/s at concurrency {result['concurrency']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
