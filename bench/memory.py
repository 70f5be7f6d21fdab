"""Memory per guild and fixed base: our stack against bare discord.py with the members intent, on the large world.

``python -m bench memory [--guilds 2000] [--huge 2] [--huge-members 100000] [--shards 2] [--traffic 100000]
[--messages 20000] [--quiet 30] [--bots bare,stack] [--base-only] [--stack-env NAME=VALUE] [--json PATH]``

The two bots (``bench._bots``) run one after the other, each against fresh simulators:

- **bare**: ``bench/_bare_bot.py --members --presences``, an unmodified ``AutoShardedBot`` with the
  members and presences intents and discord.py's default caching for them: every member cached,
  every large guild chunked at start-up (READY waits for the chunks);
- **stack**: ``python -m shard`` with every service (Redis, PostgreSQL, the pipeline, metrics) and
  every command, as the launcher runs it (its own intents and caches: ``shard/bot.py``).

Each bot goes through two worlds, with the same shard count (``--shards``, one process over all):

1. **fixed base**: a world of one guild of one member. The base is the RSS once READY and after a
   settling period (``--settle`` seconds, sampled every half second; the last sample): what the
   process costs with (almost) no guilds: interpreter, imports, connections, services. Beside the RSS,
   what it is made of (``bench._procs.memory_detail``): anonymous and file-backed pages, USS (what
   only this process holds: a shared library's clean pages count once per host, not per cluster),
   PSS and threads. ``--base-only`` stops there;
2. **large world**: ``--guilds`` guilds of realistic sizes (median 20 members, a long tail), of which
   ``--huge`` have exactly ``--huge-members`` members, the largest size drawn
   (``--max-member-count``). RSS once READY (the bare bot: once every chunk arrived); then a
   burst: ``--traffic`` events of the simulator's ``guild_traffic`` blend (presences, typing,
   member updates, joins and leaves, each guild in proportion to its size) at full speed, then
   ``--messages`` MESSAGE_CREATEs with every tenth a ``!ping`` from the next member (the burst ends
   with the last reply); RSS after the burst (and its peak, sampled every half second); then
   ``--quiet`` seconds without traffic, and the RSS after them.

Memory per guild is ``(RSS − fixed base) / guilds`` for each bot, once READY and after the burst;
the ratio is ours / bare (the issue's goal: at most 0.25). ``--stack-env`` runs our stack with extra
environment variables (e.g. ``INNKEEPER_EVENT_LOOP=asyncio``, ``MALLOC_ARENA_MAX=2``). ``--json`` writes
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench._bots import SIM_GLOBAL_RATE, Bot, Sim, bare_bot, simulator, stack_bot
from bench._db_common import scratch_database
from bench._procs import delete_redis_prefix

BOTS = ("bare", "stack")


def _sim_args(shards: int, guilds: int, *extra: str) -> list[str]:
    return ["--shards", str(shards), "--max-concurrency", str(shards), "--identify-window", "0.1",
            "--guilds", str(guilds), "--global-rate", str(SIM_GLOBAL_RATE), "--message-limit", "1000000",
            "--message-window", "1", "--resume-buffer", "1000", *extra]


async def _sampled_wait(bot: Bot, seconds: float) -> tuple[float, float]:
    """Sample the bot's RSS every half second for ``seconds``; the last sample and the peak (MiB)."""
    peak = last = bot.rss_mib()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        last = bot.rss_mib()
        peak = max(peak, last)
    return last, peak


async def _burst(sim: Sim, bot: Bot, traffic: int, messages: int, seed: int) -> tuple[float, dict[str, Any]]:
    """Send the burst; return its peak RSS and what the simulator says it sent."""
    peak = bot.rss_mib()
    sent: dict[str, Any] = {}
    if traffic:
        await sim.load({"rate": 0, "count": traffic, "kind": "guild_traffic", "seed": seed})
        while True:
            status = await sim.load_status()
            peak = max(peak, bot.rss_mib())
            if not status.get("running"):
                break
            await asyncio.sleep(0.5)
        sent["traffic"] = status.get("by_event", {})
    if messages:
        before = await sim.created()
        replies = (messages + 9) // 10
        await sim.load({"rate": 0, "count": messages, "command": "!ping", "command_every": 10})
        deadline = time.monotonic() + 300
        while (await sim.created()) - before < replies:
            peak = max(peak, bot.rss_mib())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{bot.name}: fewer than {replies} replies after 300 s")
            await asyncio.sleep(0.5)
        sent["messages"], sent["replies"] = messages, replies
    return max(peak, bot.rss_mib()), sent


async def _measure(http: aiohttp.ClientSession, name: str, args: argparse.Namespace, logs: Path, dsn: str,
                   prefix: str) -> dict[str, Any]:
    def make(sim: Sim, label: str) -> Bot:
        log = logs / f"{name}-{label}.log"
        if name == "bare":
            return bare_bot(sim.url, log, members=True, presences=True)
        return stack_bot(sim.url, log, dsn=dsn, prefix=prefix, shard_count=args.shards, env=args.stack_env)

    out: dict[str, Any] = {}
    async with simulator(http, logs / f"sim-{name}-base.log",
                         _sim_args(args.shards, 1, "--guild-sizes", "fixed", "--members-per-guild", "1")) as sim:
        bot = make(sim, "base")
        try:
            await bot.start(http)
            out["rss_base_ready_mib"] = bot.rss_mib()
            out["rss_base_mib"], _ = await _sampled_wait(bot, args.settle)
            out["base_detail_mib"] = bot.memory()
        finally:
            bot.stop()
    if args.base_only:
        return out
    large = _sim_args(args.shards, args.guilds, "--guild-sizes", "realistic", "--huge-guilds", str(args.huge),
                      "--max-member-count", str(args.huge_members), "--seed", str(args.seed))
    async with simulator(http, logs / f"sim-{name}-large.log", large) as sim:
        world = await sim.world(limit=1)
        out["guilds"] = int(world["total"])
        bot = make(sim, "large")
        try:
            started = time.monotonic()
            await bot.start(http, timeout=600)
            out["ready_s"] = time.monotonic() - started
            out["rss_ready_mib"], _ = await _sampled_wait(bot, args.settle)
            out["report_ready"] = await bot.report(http)
            out["rss_burst_peak_mib"], out["burst"] = await _burst(sim, bot, args.traffic, args.messages, args.seed)
            out["rss_after_burst_mib"] = bot.rss_mib()
            out["rss_after_quiet_mib"], _ = await _sampled_wait(bot, args.quiet)
            out["report_after"] = await bot.report(http)
        finally:
            bot.stop()
    base = out["rss_base_mib"]
    out["kib_per_guild_ready"] = (out["rss_ready_mib"] - base) * 1024 / out["guilds"]
    out["kib_per_guild_after_burst"] = (out["rss_after_burst_mib"] - base) * 1024 / out["guilds"]
    out["kib_per_guild_after_quiet"] = (out["rss_after_quiet_mib"] - base) * 1024 / out["guilds"]
    return out


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="ik-bench-memory-"))
    prefix = f"ikbench-{uuid.uuid4().hex[:10]}"
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http, scratch_database() as dsn:
        try:
            for name in args.bots:
                results[name] = await _measure(http, name, args, logs, dsn, prefix)
                print(f"  ... {name}: {json.dumps(results[name])}", flush=True)
        finally:
            await delete_redis_prefix(prefix)
    out: dict[str, Any] = {"bots": results, "logs": str(logs), "load_average": os.getloadavg()[0],
                           "world": {"guilds": args.guilds, "huge": args.huge, "huge_members": args.huge_members,
                                     "shards": args.shards, "seed": args.seed}}
    if "bare" in results and "stack" in results:
        bare, stack = results["bare"], results["stack"]
        out["base_difference_mib"] = stack["rss_base_mib"] - bare["rss_base_mib"]
        out["base_difference_uss_mib"] = stack["base_detail_mib"]["uss"] - bare["base_detail_mib"]["uss"]
        if not args.base_only:
            out["ratio_per_guild_ready"] = stack["kib_per_guild_ready"] / bare["kib_per_guild_ready"]
            out["ratio_per_guild_after_burst"] = (stack["kib_per_guild_after_burst"]
                                                  / bare["kib_per_guild_after_burst"])
    out["stack_env"] = args.stack_env
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n")[0])
    parser.add_argument("--guilds", type=int, default=2000, help="guilds of realistic sizes, the huge ones among them")
    parser.add_argument("--huge", type=int, default=2, help="guilds of exactly --huge-members members")
    parser.add_argument("--huge-members", type=int, default=100_000, help="the huge guilds' size, and the size cap")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--traffic", type=int, default=100_000, help="guild_traffic events in the burst")
    parser.add_argument("--messages", type=int, default=20_000, help="MESSAGE_CREATEs in the burst (10 %% !ping)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after READY before the RSS is read")
    parser.add_argument("--quiet", type=float, default=30.0, help="seconds without traffic after the burst")
    parser.add_argument("--bots", default=",".join(BOTS))
    parser.add_argument("--base-only", action="store_true", help="measure the fixed base only (about a minute)")
    parser.add_argument("--stack-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment variable for our stack, e.g. MALLOC_ARENA_MAX=2")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    args.bots = [b for b in args.bots.split(",") if b]
    stack_env: dict[str, str] = {}
    for item in args.stack_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--stack-env: expected NAME=VALUE, got {item!r}")
        stack_env[name] = value
    args.stack_env = stack_env
    if not args.bots or any(b not in BOTS for b in args.bots):
        parser.error(f"--bots: choose from {', '.join(BOTS)}")
    out = asyncio.run(benchmark(args))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    for name, r in out["bots"].items():
        d = r["base_detail_mib"]
        print(f"  {name:5s} fixed base: RSS {r['rss_base_mib']:.1f} MiB (anonymous {d['rss_anon']:.1f}, files "
              f"{d['rss_file']:.1f}), USS {d['uss']:.1f}, PSS {d['pss']:.1f} MiB, {d['threads']:.0f} threads")
    if "base_difference_mib" in out:
        print(f"  base difference stack − bare: RSS {out['base_difference_mib']:+.1f} MiB, "
              f"USS {out['base_difference_uss_mib']:+.1f} MiB")
    if args.base_only:
        print(f"  host: {os.cpu_count()} cpus, load average {out['load_average']:.2f}; logs in {out['logs']}")
        return 0
    print(f"memory: {args.guilds} realistic guilds ({args.huge} of {args.huge_members:,} members) over "
          f"{args.shards} shards (seed {args.seed}); burst {args.traffic:,} guild_traffic events + "
          f"{args.messages:,} messages; quiet {args.quiet:.0f} s")
    for name, r in out["bots"].items():
        print(f"  {name:5s} base {r['rss_base_mib']:.1f} MiB | {r['guilds']} guilds: READY {r['rss_ready_mib']:.1f} "
              f"({r['ready_s']:.0f} s) → burst peak {r['rss_burst_peak_mib']:.1f} → after "
              f"{r['rss_after_burst_mib']:.1f} → quiet {r['rss_after_quiet_mib']:.1f} MiB | per guild "
              f"{r['kib_per_guild_ready']:.1f} KiB ready, "
              f"{r['kib_per_guild_after_burst']:.1f} after the burst, {r['kib_per_guild_after_quiet']:.1f} after quiet"
              + (f" | members cached {r['report_ready'].get('members_cached')}" if r["report_ready"] else ""))
    if "ratio_per_guild_ready" in out:
        print(f"  ratio ours/bare per guild: {out['ratio_per_guild_ready']:.3f} ready, "
              f"{out['ratio_per_guild_after_burst']:.3f} after the burst; base difference "
              f"{out['base_difference_mib']:+.1f} MiB")
    print(f"  host: {os.cpu_count()} cpus, load average {out['load_average']:.2f}; logs in {out['logs']}")
    return 0
