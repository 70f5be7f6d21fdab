"""Cold start to all-READY, against the identify floor; and the naive way on the same simulator.

``python -m bench cold_start [--shards 64] [--clusters 4] [--guilds 2000] [--mc 1,16] [--window 1.0]
[--margin 0] [--naive-timeout 90] [--no-naive] [--json FILE]``

For each ``max_concurrency`` it starts a simulator (scaled identify window), launches the clusters
with :class:`cluster.launcher.Launcher` under a private supervisord, and reads every shard's
IDENTIFY and READY times from the heartbeats. The floor is ``(ceil(S / mc) - 1) × window``:

* ``identify ratio`` = (last READY − first IDENTIFY) / floor: what the identify queue controls;
* ``total ratio`` = (last READY − launch start) / floor: also process start-up and login.

Then the naive way: 4 plain ``AutoShardedBot`` processes started together, no shared queue,
discord.py's own pacing (5 s between a process's shards), until every shard is READY or
``--naive-timeout``; the simulator counts their identify violations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench._procs import free_port

__all__ = ("main",)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - local simulator
        return json.loads(resp.read())


class Simulator:
    """``python -m simulator`` on a free port, for one measurement."""

    def __init__(self, log: Path, *, guilds: int, shards: int, mc: int, window: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "simulator", "--port", str(self.port), "--guilds", str(guilds), "--shards",
                str(shards), "--max-concurrency", str(mc), "--identify-window", str(window), "--token", TOKEN,
                "--log-level", "WARNING"]
        self.log = log.open("wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"the simulator did not start (see {log})") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = _get_json(self.url + "/_sim/stats")
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


async def measure_ours(args: argparse.Namespace, mc: int, work: Path) -> dict[str, Any]:
    from cluster.launcher import Launcher
    from innkeeper.settings import Settings
    from ipc.heartbeat import read_heartbeats

    sim = Simulator(work / f"sim-ours-{mc}.log", guilds=args.guilds, shards=args.shards, mc=mc, window=args.window)
    run_dir = Path(tempfile.mkdtemp(prefix="ik-bench-", dir="/tmp"))
    settings = Settings.from_env({
        **{k: v for k, v in os.environ.items() if k in ("REDIS_URL", "DATABASE_URL", "PATH")},
        "DISCORD_TOKEN": TOKEN, "DISCORD_API_URL": sim.url, "INNKEEPER_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "INNKEEPER_RUN_DIR": str(run_dir), "INNKEEPER_STATUS_PORT": str(free_port()),
        "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_IDENTIFY_WINDOW": str(args.window),
        "INNKEEPER_IDENTIFY_MARGIN": str(args.margin), "INNKEEPER_HEARTBEAT_INTERVAL": "1",
        "INNKEEPER_SYNC_COMMANDS": "false", "INNKEEPER_LOG_LEVEL": "WARNING",
    })
    launcher = Launcher(settings, out=lambda _line: None)
    try:
        started = time.time()
        p = await launcher.launch(shards=args.shards, clusters=args.clusters, timeout=args.timeout)
        async with launcher.redis() as client:
            beats = await read_heartbeats(client, launcher.keys)
            shards = [s for b in beats.values() for s in b["shards"]]
            await client.delete(*[k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*")])
        stats = sim.stats()
    finally:
        await launcher.stop()
        sim.close()
    first_identify = min(s["identified_at"] or math.inf for s in shards)
    if args.timeline:
        for s in sorted(shards, key=lambda s: s["identified_at"] or 0):
            print(f"  shard {s['id']:>3} identify +{(s['identified_at'] or 0) - first_identify:7.3f}s "
                  f"ready +{(s['ready_at'] or 0) - first_identify:7.3f}s")
    last_ready = max(s["ready_at"] or 0 for s in shards)
    floor = p.identify_floor_windows * args.window
    return {
        "way": "innkeeper", "max_concurrency": mc, "shards": p.shard_count, "clusters": len(p.clusters),
        "window_s": args.window, "margin_s": args.margin, "floor_s": round(floor, 3),
        "identify_phase_s": round(last_ready - first_identify, 3), "total_s": round(last_ready - started, 3),
        "identify_ratio": round((last_ready - first_identify) / floor, 3) if floor else None,
        "total_ratio": round((last_ready - started) / floor, 3) if floor else None,
        "ready": sum(1 for s in shards if s["state"] == "READY"),
        "identifies": stats["identifies"], "identify_violations": stats["identify_violations"],
    }


def measure_naive(args: argparse.Namespace, mc: int, work: Path) -> dict[str, Any]:
    sim = Simulator(work / f"sim-naive-{mc}.log", guilds=args.guilds, shards=args.shards, mc=mc, window=args.window)
    per = args.shards // args.clusters
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    started = time.time()
    try:
        for c in range(args.clusters):
            out = work / f"naive-{mc}-{c}.out"
            span = f"{c * per}-{(c + 1) * per - 1}"
            with out.open("wb") as fh:
                procs.append((subprocess.Popen(  # noqa: S603
                    [sys.executable, str(ROOT / "bench" / "_naive_bot.py"), sim.url, TOKEN, span, str(args.shards)],
                    cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT), out))
        deadline = started + args.naive_timeout
        ready: dict[int, float] = {}
        identifies: list[float] = []
        while time.time() < deadline:
            ready, identifies = {}, []
            for _, out in procs:
                for line in out.read_text(errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == "READY":
                        ready.setdefault(int(parts[1]), float(parts[2]))
                    elif len(parts) == 3 and parts[0] == "IDENTIFY":
                        identifies.append(float(parts[2]))
            if len(ready) >= args.shards:
                break
            time.sleep(0.5)
        stats = sim.stats()
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        sim.close()
    done = len(ready) >= args.shards
    last = max(ready.values()) if done else None
    return {
        "way": "naive", "max_concurrency": mc, "shards": args.shards, "clusters": args.clusters,
        "window_s": args.window, "ready": len(ready), "all_ready": done,
        "total_s": round(last - started, 3) if last else None,
        "identify_phase_s": round(last - min(identifies), 3) if last and identifies else None,
        "gave_up_after_s": None if done else args.naive_timeout,
        "identifies": stats["identifies"], "identify_violations": stats["identify_violations"],
    }


def _row(r: dict[str, Any]) -> str:
    if r["way"] == "innkeeper":
        return (f"innkeeper  mc={r['max_concurrency']:<3} {r['shards']} shards/{r['clusters']} clusters  window "
                f"{r['window_s']}s+{r['margin_s']}s  floor {r['floor_s']}s  identify phase {r['identify_phase_s']}s "
                f"(ratio {r['identify_ratio']})  total {r['total_s']}s (ratio {r['total_ratio']})  "
                f"READY {r['ready']}  violations {r['identify_violations']}")
    took = f"{r['total_s']}s" if r["all_ready"] else f"not all READY after {r['gave_up_after_s']}s"
    return (f"naive      mc={r['max_concurrency']:<3} {r['shards']} shards/{r['clusters']} processes  {took}  "
            f"READY {r['ready']}  identifies {r['identifies']}  violations {r['identify_violations']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cold_start", description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--guilds", type=int, default=2000)
    parser.add_argument("--mc", default="1,16", help="max_concurrency values, comma-separated")
    parser.add_argument("--window", type=float, default=1.0, help="scaled identify window in seconds")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="INNKEEPER_IDENTIFY_MARGIN for our run (counted from each READY; 0 is safe)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for our clusters")
    parser.add_argument("--naive-timeout", type=float, default=90.0)
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--timeline", action="store_true", help="print each shard's identify and READY times")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ik-bench-logs-"))
    results: list[dict[str, Any]] = []
    for mc in (int(x) for x in args.mc.split(",")):
        r = asyncio.run(measure_ours(args, mc, work))
        print(_row(r), flush=True)
        results.append(r)
        if not args.no_naive:
            r = measure_naive(args, mc, work)
            print(_row(r), flush=True)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"logs: {work}")
    return 0
