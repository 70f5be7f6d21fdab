"""One cluster past its capacity, with and without admission: no collapse, every user answered in 3 s.

``python -m bench overload [--seconds 10] [--multiples 1,2,5] [--events-per-s 2000] [--json FILE]``

A simulator (200 guilds on 2 shards, REST limits raised far above Discord's so the bot is measured)
and one ``python -m shard`` cluster over both shards, every service on, real PostgreSQL and Redis.
Under a steady background stream of ``--events-per-s`` MESSAGE_CREATEs (plain chat), for each mode:

1. **unloaded**: 20 slash commands a second for ``--seconds``: the admitted p99 the goal compares to;
2. **capacity** (on a cluster of its own, before the modes): 128 users each sending their next
   command when the last is answered (closed loop), for ``--seconds``: the commands answered per
   second is the capacity;
3. **overload**: open-loop streams of :data:`~bench._slash_load.MIX` (cheap and database commands,
   random members of random guilds) at each multiple of that capacity, for ``--seconds`` each.

The modes are **admission** (the defaults: 64 running, a queue of at most 1 s, deferral at 1.5 s,
early shedding) and **none** (``INNKEEPER_COMMANDS_MAX_RUNNING`` far above anything offered: every
command starts at once); both offer the same load.
Per step: sent, answered within Discord's 3 s (the callback: an answer, a deferral or the shed
message), shed (``E5008``), deferred, admitted commands answered per second, admitted p50/p99, the
CPU the cluster, the simulator and this load generator used (in cores: all three share the box),
and the heartbeat timeouts the simulator counted (a shard whose gateway starved). Latency is the
simulator's (INTERACTION_CREATE written → callback received).

Goals (issue 13): admitted throughput stays at capacity up to 5×; every command answered within
3 s; admitted p99 ≤ 2× the unloaded p99; 0 heartbeat timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench._bots import SIM_GLOBAL_RATE, simulator, stack_bot
from bench._db_common import scratch_database
from bench._procs import cpu_seconds, delete_redis_prefix
from bench._slash_load import closed_loop, open_loop, post, request_for, summarize

__all__ = ("main",)

GUILDS = 200
SHARDS = 2
UNLOADED_RATE = 20.0
CAPACITY_USERS = 128
#: "no admission": more places than the benchmark ever offers commands
NO_ADMISSION = {"INNKEEPER_COMMANDS_MAX_RUNNING": "100000", "INNKEEPER_COMMANDS_MAX_QUEUED": "0"}


async def _stats(http: aiohttp.ClientSession, sim: str) -> dict[str, Any]:
    async with http.get(sim + "/_sim/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def _background(http: aiohttp.ClientSession, sim: str, rate: float, seconds: float) -> None:
    if rate <= 0:
        return
    async with http.post(sim + "/_sim/load", json={"kind": "message_create", "rate": rate,
                                                   "seconds": seconds}) as resp:
        if resp.status != 202:
            raise RuntimeError(f"the simulator refused the background load: {await resp.text()}")


_WATCHED = ("innkeeper_commands_running", "innkeeper_commands_queued", "innkeeper_commands_deferred_total",
            "innkeeper_commands_shed_total", "innkeeper_event_loop_lag_seconds")


async def _metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The admission and loop-lag figures of the cluster's ``/metrics`` (shed summed over reasons)."""
    out: dict[str, float] = {}
    async with http.get(url) as resp:
        for line in (await resp.text()).splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in _WATCHED:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def _stop_background(http: aiohttp.ClientSession, sim: str) -> None:
    async with http.delete(sim + "/_sim/load"):
        pass


async def _mode(http: aiohttp.ClientSession, name: str, env: dict[str, str], seconds: float,
                multiples: list[float], capacity: float | None, events_per_s: float, logs: Path) -> dict[str, Any]:
    prefix = f"ikbench-ov-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"mode": name, "steps": []}
    async with scratch_database() as dsn, simulator(http, logs / f"sim-{name}.log", [
            "--guilds", str(GUILDS), "--shards", str(SHARDS), "--max-concurrency", str(SHARDS),
            "--identify-window", "0.1", "--global-rate", str(SIM_GLOBAL_RATE), "--message-limit", "1000000",
            "--message-window", "1", "--resume-buffer", "1000"]) as sim:
        bot = stack_bot(sim.url, logs / f"cluster-{name}.log", dsn=dsn, prefix=prefix, shard_count=SHARDS, env=env)
        await bot.start(http)
        try:
            guilds = (await sim.world(GUILDS))["guilds"]
            rng = random.Random(13)
            for g in guilds[:SHARDS * 4]:  # every shard answers before the clock starts (configs loaded)
                result = await post(http, sim.url, request_for(g, rng))
                if result.status != 200:
                    raise RuntimeError(f"the cluster did not answer a warm-up command: {result}; see {logs}")
            # the background chat runs through every step
            total = seconds * (2 + len(multiples)) + 120
            await _background(http, sim.url, events_per_s, total)
            hb_before = (await _stats(http, sim.url)).get("heartbeat_timeouts", 0)

            results, sent_in = await open_loop(http, sim.url, guilds, UNLOADED_RATE, seconds, rng)
            unloaded = {"step": "unloaded", "offered_per_s": UNLOADED_RATE, **summarize(results, sent_in),
                        "metrics": await _metrics(http, bot.ready_url)}
            out["steps"].append(unloaded)
            if capacity is None:
                results = await closed_loop(http, sim.url, guilds, CAPACITY_USERS, seconds, rng)
                cap = summarize(results, seconds)
                capacity = float(cap["admitted_per_s"] or 0.0)
                out["steps"].append({"step": "capacity", "offered_per_s": None, **cap,
                                     "metrics": await _metrics(http, bot.ready_url)})
            out["capacity_per_s"] = capacity
            assert bot.proc is not None
            procs = {"cluster": bot.proc.pid, "simulator": sim.proc.pid, "benchmark": os.getpid()}
            for multiple in multiples:
                rate = capacity * multiple
                cpu = {name: cpu_seconds(pid) for name, pid in procs.items()}
                results, sent_in = await open_loop(http, sim.url, guilds, rate, seconds, rng)
                busy = {name: round((cpu_seconds(pid) - cpu[name]) / sent_in, 2) for name, pid in procs.items()}
                step = {"step": f"{multiple:g}x", "offered_per_s": round(rate, 1), **summarize(results, sent_in),
                        "metrics": await _metrics(http, bot.ready_url), "cpu_cores": busy}
                out["steps"].append(step)
            out["heartbeat_timeouts"] = (await _stats(http, sim.url)).get("heartbeat_timeouts", 0) - hb_before
            await _stop_background(http, sim.url)
        finally:
            bot.stop()
            await delete_redis_prefix(prefix)
    return out


async def _run(seconds: float, multiples: list[float], events_per_s: float, logs: Path) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # capacity first, on a cluster of its own, so that neither mode starts its overload steps after it
        measured = await _mode(http, "capacity", NO_ADMISSION, seconds, [], None, events_per_s, logs)
        capacity = measured["capacity_per_s"]
        admission = await _mode(http, "admission", {}, seconds, multiples, capacity, events_per_s, logs)
        none = await _mode(http, "none", NO_ADMISSION, seconds, multiples, capacity, events_per_s, logs)
    return {"seconds": seconds, "events_per_s": events_per_s, "capacity_per_s": capacity,
            "modes": [measured, admission, none], "logs": str(logs), "load_average": os.getloadavg()[0]}


def _print(out: dict[str, Any]) -> None:
    print(f"overload: one cluster, {SHARDS} shards, {GUILDS} guilds, background {out['events_per_s']:g} "
          f"MESSAGE_CREATE/s; capacity {out['capacity_per_s']:.0f} commands/s (closed loop, {CAPACITY_USERS} users)")
    print(f"  {'mode':10s}{'step':>10s}{'offered/s':>10s}{'sent':>7s}{'≤3 s':>8s}{'shed':>7s}{'deferred':>9s}"
          f"{'admitted/s':>11s}{'p50 ms':>8s}{'p99 ms':>9s}{'no answer':>10s}  CPU cores: cluster/simulator/load")
    for mode in out["modes"]:
        for s in mode["steps"]:
            within = f"{100.0 * s['answered_within_3s'] / s['sent']:.1f}%" if s["sent"] else "-"
            offered = f"{s['offered_per_s']:.0f}" if s["offered_per_s"] else "closed"
            print(f"  {mode['mode']:10s}{s['step']:>10s}{offered:>10s}{s['sent']:>7d}{within:>8s}{s['shed']:>7d}"
                  f"{s['deferred']:>9d}{s['admitted_per_s']:>11.1f}{s['p50_ms']:>8.1f}{s['p99_ms']:>9.1f}"
                  f"{s['unanswered']:>10d}  " + ("/".join(f"{v:.2f}" for v in s["cpu_cores"].values())
                                                 if "cpu_cores" in s else ""))
        print(f"  {mode['mode']:10s} heartbeat timeouts: {mode['heartbeat_timeouts']}")
    print(f"  host: {os.cpu_count()} cpus, load average {out['load_average']:.2f}; logs in {out['logs']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench overload", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--multiples", default="1,2,5", help="overload steps, as multiples of the capacity")
    parser.add_argument("--events-per-s", type=float, default=2000.0, help="background MESSAGE_CREATEs per second")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    multiples = [float(m) for m in args.multiples.split(",") if m.strip()]
    logs = Path(tempfile.mkdtemp(prefix="ik-bench-overload-"))
    out = asyncio.run(_run(args.seconds, multiples, args.events_per_s, logs))
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
