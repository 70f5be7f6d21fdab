"""REST throughput and 429s: N processes sharing the Redis limiter against N stock discord.py processes.

``python -m bench ratelimit_shared [--processes 4] [--seconds 8] [--api URL] [--workload both|one-bucket|global]
[--global-margin 0.05]``

Starts the simulator (``python -m simulator``, global limit 50/s, message sends 5 per 1 s per
channel) unless ``--api`` points at a running one, then runs two workloads, each first with our
shared limiter installed (``shared``) and then with discord.py alone (``local``), in one run:

``one bucket``
    every process sends messages to the same channel as fast as it can (allowed: 5/s);
``global``
    every process sends to 40 channels (200/s of bucket capacity), so the 50/s global limit binds.

Each process is a separate ``python -m bench.ratelimit_shared --worker`` with its own
``discord.http.HTTPClient``; they start together at a shared instant. Reported per run: accepted
requests per second (on the simulator's clock: the messages it created within ``--seconds`` of
the first one, so a worker that starts late on a loaded machine cannot inflate the rate), that
as a fraction of the allowed rate, the 429s the
simulator answered (by scope, from ``/_sim/stats``), and, for the shared limiter, Redis round
trips per request (``redis_calls / requests`` of :class:`~ipc.ratelimit.SharedRateLimiter`: one
pipeline is one round trip; every attempt discord.py makes is a request) and per accepted request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

from bench._procs import free_port
from innkeeper.settings import PROJECT_ROOT

__all__ = ("main",)

TOKEN = "sim-token"
MESSAGE_LIMIT, MESSAGE_WINDOW, GLOBAL_RATE = 5, 1.0, 50


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a local simulator URL
        return json.loads(resp.read())


# --- worker process ------------------------------------------------------------------------------


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from discord.http import HTTPClient, Route
    from discord.utils import snowflake_time

    from ipc.keys import Keys
    from ipc.ratelimit import SharedRateLimiter
    from shard.rest_hook import install

    Route.BASE = args.api + "/api/v10"
    http = HTTPClient(asyncio.get_running_loop())
    limiter = redis = None
    if args.mode == "shared":
        redis = aioredis.from_url(args.redis)
        limiter = SharedRateLimiter(redis, Keys(args.prefix), global_rate=GLOBAL_RATE,
                                    global_margin=args.global_margin)
        install(http, limiter)
    await http.static_login(TOKEN)
    channels = [int(c) for c in args.channels.split(",")]
    late = max(0.0, time.time() - args.start_at)  # a loaded machine can start a worker after the others
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    deadline = time.monotonic() + args.seconds
    times: list[float] = []  # when the simulator created each accepted message (its id's timestamp)
    errors: dict[str, int] = {}

    async def loop(channel_id: int) -> None:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
        while time.monotonic() < deadline:
            try:
                message = await http.request(route, json={"content": "bench"})
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            times.append(snowflake_time(int(message["id"])).timestamp())

    tasks = [asyncio.create_task(loop(c)) for c in channels for _ in range(args.tasks)]
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = {"times": times, "late": late, "errors": errors, "redis_calls": limiter.redis_calls if limiter else 0,
              "requests": limiter.requests if limiter else 0}
    await http.close()
    if limiter is not None:
        await limiter.close()
    if redis is not None:
        await redis.aclose()
    return result


# --- orchestration -------------------------------------------------------------------------------


def _start_simulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--guilds", "200", "--global-rate", str(GLOBAL_RATE),
         "--message-limit", str(MESSAGE_LIMIT), "--message-window", str(MESSAGE_WINDOW), "--token", TOKEN],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the simulator exited at start-up")
        try:
            _get(f"http://127.0.0.1:{port}/_sim/stats")
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the simulator did not start within 30 s")


def _run(api: str, mode: str, channels: list[str], processes: int, seconds: float, tasks: int,
         redis_url: str, margin: float) -> dict[str, Any]:
    before = _get(api + "/_sim/stats")["rate_limited"]
    prefix = f"bench-rl-{uuid.uuid4().hex[:8]}"
    start_at = time.time() + 2.0
    workers = [subprocess.Popen(
        [sys.executable, "-m", "bench.ratelimit_shared", "--worker", "--mode", mode, "--api", api,
         "--channels", ",".join(channels), "--tasks", str(tasks), "--seconds", str(seconds),
         "--start-at", str(start_at), "--redis", redis_url, "--prefix", prefix, "--global-margin", str(margin)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE) for _ in range(processes)]
    results = []
    for w in workers:
        out, _ = w.communicate(timeout=seconds + 60)
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    after = _get(api + "/_sim/stats")["rate_limited"]
    if mode == "shared":
        _delete_prefix(redis_url, prefix)
    # measured on the simulator's clock: messages it created within `seconds` of the first one
    times = sorted(t for r in results for t in r["times"])
    accepted = sum(1 for t in times if t < times[0] + seconds) if times else 0
    allowed_rate = MESSAGE_LIMIT / MESSAGE_WINDOW if len(channels) == 1 else min(
        GLOBAL_RATE, len(channels) * MESSAGE_LIMIT / MESSAGE_WINDOW)
    limited = {scope: after.get(scope, 0) - before.get(scope, 0) for scope in ("user", "global", "shared")}
    errors: dict[str, int] = {}
    for r in results:
        for name, n in r["errors"].items():
            errors[name] = errors.get(name, 0) + n
    calls = sum(r["redis_calls"] for r in results)
    requests = sum(r["requests"] for r in results)
    return {"mode": mode, "accepted": accepted, "per_s": round(accepted / seconds, 2),
            "allowed_per_s": allowed_rate, "fraction": round(accepted / (allowed_rate * seconds), 3),
            "429": sum(limited.values()), "429_by_scope": limited, "errors": errors,
            "latest_start_s": round(max(r["late"] for r in results), 3),
            "round_trips": calls, "requests": requests,
            "round_trips_per_request": round(calls / requests, 3) if requests else None,
            "round_trips_per_accepted": round(calls / len(times), 3) if times and requests else None}


def _delete_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ratelimit_shared", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--api", default=None, help="a running simulator's URL (default: start one)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--workload", choices=("both", "one-bucket", "global"), default="both")
    parser.add_argument("--global-margin", type=float, default=0.05,
                        help="the shared limiter's global margin in seconds (default 0.05, the limiter's own)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("shared", "local"), default="shared", help=argparse.SUPPRESS)
    parser.add_argument("--channels", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        logging.basicConfig(level=logging.ERROR)  # discord.py warns on every 429 in local mode
        print(json.dumps(asyncio.run(_worker(args))), flush=True)
        return 0

    sim = None
    api = args.api
    if api is None:
        port = free_port()
        sim = _start_simulator(port)
        api = f"http://127.0.0.1:{port}"
    try:
        world = _get(api + "/_sim/world?limit=40")["guilds"]
        channels = [g["channels"][0] for g in world]
        report: dict[str, Any] = {"processes": args.processes, "seconds": args.seconds, "target": "simulator",
                                  "runs": {}}
        workloads = (("one bucket", channels[:1], 8), ("global", channels[:40], 2))
        for name, chans, tasks in (w for w in workloads if args.workload in ("both", w[0].replace(" ", "-"))):
            for mode in ("shared", "local"):
                time.sleep(2.0)  # let every window from the previous run expire
                run = _run(api, mode, chans, args.processes, args.seconds, tasks, args.redis, args.global_margin)
                report["runs"][f"{name} / {mode}"] = run
                trips = run["round_trips_per_request"]
                print(f"{name:10} {mode:6}: {run['per_s']:6.2f}/s of {run['allowed_per_s']:g}/s allowed "
                      f"({run['fraction'] * 100:5.1f} %), 429s: {run['429']:4d} {run['429_by_scope']}"
                      + (f", Redis round trips/request {trips} ({run['round_trips']} for {run['requests']}; "
                         f"{run['round_trips_per_accepted']} per accepted)" if trips is not None else "")
                      + (f", errors {run['errors']}" if run["errors"] else "")
                      + (f", a worker started {run['latest_start_s']}s late" if run["latest_start_s"] > 0.1 else ""),
                      flush=True)
        print(json.dumps(report))
    finally:
        if sim is not None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
