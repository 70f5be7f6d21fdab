"""Our stack against bare discord.py on the same simulator stream, side by side, interleaved.

``python -m bench dispatch [--events 20000] [--runs 3] [--guilds 1000] [--workloads messages,commands]
[--json PATH]``

Two bots, each in a process of its own, against one simulator process (1 shard, ``--guilds`` guilds
of 200 members, REST limits raised so that only the bots' own speed counts):

- **bare**: ``bench/_bare_bot.py``, an unmodified ``AutoShardedBot`` whose ``on_message`` hands
  every message to ``process_commands``, with a ``!ping`` command;
- **stack**: ``python -m shard``, the cluster process with every service (Redis, PostgreSQL, the
  pipeline, metrics), as the launcher runs it.

Workloads, each run once per bot per round, the bots alternating (bare, stack, bare, stack, …) so
that a noisy neighbour hurts both alike:

- ``messages``: ``--events`` MESSAGE_CREATEs of plain chat, the first and the last of them a
  ``!ping`` from distinct users; the time runs from the load's start to the reply to the last ping,
  which the bot can only send after handling every message before it (discord.py handles a shard's
  events in order; the messages our stack parks while their guild's configuration loads are
  decided after the load, so for the stack the run ends once none is parked);
- ``commands``: the same stream with every tenth message a ``!ping`` from the next member in turn
  (distinct users, so no throttle binds); the time runs until every reply was created.

Both are measured outside the bots, by the simulator's ``messages_created``. Each bot start is
warmed up with one message per guild first (a long-running bot has its guilds' settings cached). Memory is each bot's
RSS once READY and after the last run. The ratios are stack / bare of the medians (above 1: our
stack is faster). ``--json`` writes every figure for the performance gate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench._bots import SIM_GLOBAL_RATE, Bot, Sim, bare_bot, simulator, stack_bot
from bench._db_common import scratch_database
from bench._procs import delete_redis_prefix

WORKLOADS = ("messages", "commands")


def _sim_args(guilds: int) -> list[str]:
    return ["--guilds", str(guilds), "--shards", "1", "--guild-sizes", "fixed", "--members-per-guild", "200",
            "--identify-window", "0.1", "--global-rate", str(SIM_GLOBAL_RATE), "--message-limit", "1000000",
            "--message-window", "1", "--resume-buffer", "1000"]


async def _run(sim: Sim, bot: Bot, workload: str, events: int) -> tuple[float, float, int]:
    """Events per second the bot handled in one run of ``workload``, its CPU µs per event, and the replies
    beyond one per command (late or duplicate replies; any is a bug)."""
    before = await sim.created()
    cpu0 = bot.cpu_s()
    if workload == "messages":
        body = {"rate": 0, "count": events + 1, "command": "!ping", "command_every": events}
        replies = 2
    else:
        body = {"rate": 0, "count": events, "command": "!ping", "command_every": 10}
        replies = (events + 9) // 10
    started = time.perf_counter()
    await sim.load(body)
    done = [0]

    async def poll() -> None:
        while True:
            done[0] = await sim.created() - before
            if done[0] >= replies:
                break
            await asyncio.sleep(0.02)
        # The stack parks the messages of guilds whose configuration is loading and decides on them
        # after the load, possibly after the last reply: the run ends once none waits.
        while True:
            if not await bot.metric(sim.http, "innkeeper_messages_parked"):
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout=300)
    except TimeoutError as exc:
        raise RuntimeError(f"{workload}: only {done[0]} of {replies} replies after 300 s") from exc
    elapsed = time.perf_counter() - started
    cpu = bot.cpu_s() - cpu0
    await asyncio.sleep(1.0)  # a reply that comes later still than this is not seen: a lower bound
    extra = await sim.created() - before - replies
    return events / elapsed, cpu / events * 1e6, extra


async def benchmark(events: int, runs: int, guilds: int, workloads: list[str],
                    profile: Path | None = None) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="ik-bench-dispatch-"))
    prefix = f"ikbench-{uuid.uuid4().hex[:10]}"
    results: dict[str, dict[str, list[float]]] = {w: {"bare": [], "stack": []} for w in workloads}
    cpu: dict[str, dict[str, list[float]]] = {w: {"bare": [], "stack": []} for w in workloads}
    lean: dict[str, list[float]] = {w: [] for w in workloads}
    extras: dict[str, dict[str, int]] = {w: {"bare": 0, "stack": 0} for w in workloads}
    memory: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession() as http, scratch_database() as dsn, simulator(
            http, logs / "simulator.log", _sim_args(guilds)) as sim:
        bots = {
            "bare": bare_bot(sim.url, logs / "bare.log", profile=profile / "bare.prof" if profile else None),
            "stack": stack_bot(sim.url, logs / "stack.log", dsn=dsn, prefix=prefix,
                               profile=profile / "stack.prof" if profile else None),
        }
        try:
            for name, bot in bots.items():
                await bot.start(http)
                memory[name] = {"rss_ready_mib": bot.rss_mib()}
                bot.stop()
            for _ in range(runs):
                for name, bot in bots.items():
                    await bot.start(http)
                    try:
                        await _run(sim, bot, "messages", guilds)  # warm-up: one message per guild
                        for workload in workloads:
                            skipped = await bot.metric(http, "innkeeper_messages_skipped_total")
                            rate, us, extra = await _run(sim, bot, workload, events)
                            extras[workload][name] += extra
                            if skipped is not None:
                                after = await bot.metric(http, "innkeeper_messages_skipped_total") or 0.0
                                # the bot also receives its own replies (one per ping), which it skips too
                                received = events + (2 if workload == "messages" else (events + 9) // 10)
                                lean[workload].append((after - skipped) / received)
                            results[workload][name].append(rate)
                            cpu[workload][name].append(us)
                        memory[name]["rss_after_burst_mib"] = bot.rss_mib()
                    finally:
                        bot.stop()
        finally:
            for bot in bots.values():
                bot.stop()
            await delete_redis_prefix(prefix)
    out: dict[str, Any] = {"events": events, "runs": runs, "guilds": guilds, "logs": str(logs), "workloads": {},
                           "memory": memory, "load_average": os.getloadavg()[0]}
    for workload, by_bot in results.items():
        medians = {name: statistics.median(v) for name, v in by_bot.items()}
        out["workloads"][workload] = {"runs": by_bot, "median": medians,
                                      "ratio": medians["stack"] / medians["bare"],
                                      "cpu_us_per_event": {k: statistics.median(v) for k, v in cpu[workload].items()},
                                      "extra_replies": extras[workload],
                                      "stack_unparsed_share": (statistics.median(lean[workload])
                                                               if lean[workload] else None)}
    return out



def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guilds", type=int, default=1000)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run each bot under cProfile, writing DIR/bare.prof and DIR/stack.prof (the last run's)")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    if any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads: choose from {', '.join(WORKLOADS)}")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    out = asyncio.run(benchmark(args.events, args.runs, args.guilds, workloads, args.profile))
    print(f"dispatch: {args.events} MESSAGE_CREATEs over {args.guilds} guilds on one shard, {args.runs} interleaved "
          f"runs per bot; medians (events/s handled; ratio stack/bare)")
    for workload, fig in out["workloads"].items():
        runs = {k: ", ".join(f"{v:,.0f}" for v in vals) for k, vals in fig["runs"].items()}
        print(f"  {workload:9s} bare {fig['median']['bare']:>9,.0f}/s ({runs['bare']})   "
              f"stack {fig['median']['stack']:>9,.0f}/s ({runs['stack']})   ratio {fig['ratio']:.2f}   "
              f"CPU/event bare {fig['cpu_us_per_event']['bare']:.0f} µs, "
              f"stack {fig['cpu_us_per_event']['stack']:.0f} µs; "
              f"stack left {fig['stack_unparsed_share'] or 0:.0%} unparsed; late or duplicate replies "
              f"bare {fig['extra_replies']['bare']}, stack {fig['extra_replies']['stack']}")
    for name, mem in out["memory"].items():
        print(f"  memory {name:5s} RSS ready {mem['rss_ready_mib']:.1f} MiB, after the bursts "
              f"{mem.get('rss_after_burst_mib', float('nan')):.1f} MiB")
    print(f"  host: {os.cpu_count()} cpus, load average {out['load_average']:.2f}; logs in {out['logs']}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0
