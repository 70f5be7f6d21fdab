"""Our stack against bare discord.py on the same simulator stream, side by side, interleaved.

``python -m bench dispatch [--events 20000] [--runs 3] [--guilds 1000] [--workloads messages,commands,automod,traffic]
[--spam-every 499] [--traffic-events 200000] [--traffic-guilds 1000] [--traffic-huge 2] [--traffic-huge-members 25000]
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
  (distinct users, so no throttle binds); the time runs until every reply was created;
- ``automod``: the ``messages`` stream with every text distinct (``vary_content``) and a small share
  of invite links (every ``--spam-every``-th message, 499 by default: 0.2 %), run by the two bots
  above and by a third, **automod**: the same stack on a database of its own where every guild has
  automod ``high`` (set in the settings table before it starts; a Redis prefix of its own, so no
  cached configuration of the other stack leaks in), which runs only this workload, right after its
  warm-up (the other bots run it first too, so the two stacks run it in the same place). It
  deletes each invite that is not a moderator's (the simulator does not store load messages, so
  each DELETE is answered 404: the request is made all the same) and writes its audit rows; the
  benchmark says how many rule-breaking messages it acted on and how many it left alone because
  their author is a moderator (``innkeeper_automod_exempt_total``: the world's members include
  some), so the figure says what automod did. The issue's target: automod on costs at most 10 % of
  the throughput of the same stack with automod off, so the benchmark prints automod / stack on
  this stream, and automod against the stack's plain ``messages``, and the same comparison in the
  bots' CPU per event (stack / automod), which a noisy neighbour disturbs less. Each rule-breaking
  message costs its action (a REST request through the shared limiter, an audit row), so the ratio
  depends on ``--spam-every``;
- ``traffic``: the large-guild world with presences, on a world of its own (:func:`traffic_benchmark`):
  ``--traffic-guilds`` guilds of realistic sizes (median 20 members, a long tail), ``--traffic-huge``
  of them with exactly ``--traffic-huge-members`` members, over two shards, a fresh simulator (the
  same seeded world) for each bot start. Bare discord.py runs with the members and presences intents
  and discord.py's default caching for them, as in ``bench memory`` (every member cached, every
  large guild chunked before READY); our stack as it runs (its own intents: the gateway filters
  presences, typing and member events before they reach it). Each run sends ``--traffic-events``
  events of the simulator's ``guild_traffic`` blend at full speed (70 % PRESENCE_UPDATE, 15 %
  TYPING_START, 9 % GUILD_MEMBER_UPDATE, 3 % joins, 3 % leaves, each guild in proportion to its
  size), then a ``!ping`` in one guild of each shard; the time runs from the load's start to the
  last of those replies (each shard's events are handled in order, so the reply comes after every
  event before it). Events per second are the blend's events over that time, whatever the bot's
  intents let through; what each bot really received (the simulator's dispatches) is reported
  beside them.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench._bots import ROOT, SIM_GLOBAL_RATE, TOKEN, Bot, Sim, bare_bot, profiled, simulator, stack_bot
from bench._db_common import scratch_database
from bench._procs import delete_redis_prefix, free_port
from db import guilds as db_guilds
from db.pool import Database

WORKLOADS = ("messages", "commands", "automod", "traffic")
#: In the ``automod`` workload, one message in this many is an invite link by default (``--spam-every``;
#: a prime, so the links spread over as many guilds as there are).
SPAM_EVERY = 499
SPAM = "join my server https://discord.gg/innkeeper-bench"


@asynccontextmanager
async def _simulator(http: aiohttp.ClientSession, guilds: int, log: Path) -> AsyncIterator[Sim]:
    async with simulator(http, log, ["--guilds", str(guilds), "--shards", "1", "--guild-sizes", "fixed",
                                     "--members-per-guild", "200", "--identify-window", "0.1",
                                     "--global-rate", str(SIM_GLOBAL_RATE), "--message-limit", "1000000",
                                     "--message-window", "1", "--resume-buffer", "1000"]) as sim:
        yield sim


async def _run(sim: Sim, bot: Bot, workload: str, events: int, spam_every: int = SPAM_EVERY
               ) -> tuple[float, float, int]:
    """Events per second the bot handled in one run of ``workload``, its CPU µs per event, and the replies
    beyond one per command (late or duplicate replies; any is a bug)."""
    before = await sim.created()
    cpu0 = bot.cpu_s()
    if workload == "messages":
        body = {"rate": 0, "count": events + 1, "command": "!ping", "command_every": events}
        replies = 2
    elif workload == "automod":
        body = {"rate": 0, "count": events + 1, "command": "!ping", "command_every": events, "vary_content": True,
                "spam": SPAM, "spam_every": spam_every}
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


def _without(args: list[str], modules: str) -> list[str]:
    """``args`` run as if ``modules`` (comma-separated) were not installed (``bench/_without.py``)."""
    return args if not modules else [str(ROOT / "bench" / "_without.py"), modules, *args]



async def _automod_everywhere(dsn: str, guild_ids: list[int]) -> None:
    """Set automod ``high`` for every guild in the database at ``dsn`` (before the bot using it starts)."""
    db = Database(dsn, min_size=1, max_size=2)
    await db.connect()
    try:
        for guild_id in guild_ids:
            await db_guilds.set_automod_level(db, guild_id, 3)
    finally:
        await db.close()


def _stack_env(sim: Sim, dsn: str, prefix: str, metrics_base: int,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"DISCORD_TOKEN": TOKEN, "DISCORD_API_URL": sim.url, "DATABASE_URL": dsn,
            "INNKEEPER_REDIS_PREFIX": prefix, "INNKEEPER_ENCRYPTION_KEYS": "dev",
            "INNKEEPER_IPC_KEYS": "dev", "INNKEEPER_GLOBAL_RATE": str(SIM_GLOBAL_RATE),
            "INNKEEPER_LOG_LEVEL": "WARNING", "INNKEEPER_LOG_FORMAT": "json",
            "INNKEEPER_METRICS_PORT_BASE": str(metrics_base), "INNKEEPER_IDENTIFY_WINDOW": "0.1", **(extra or {})}



async def benchmark(events: int, runs: int, guilds: int, workloads: list[str],
                    profile: Path | None = None, spam_every: int = SPAM_EVERY, *,
                    stack_env: dict[str, str] | None = None, stack_without: str = "",
                    bare_without: str = "") -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="ik-bench-dispatch-"))
    prefix = f"ikbench-{uuid.uuid4().hex[:10]}"
    automod_prefix = prefix + "-automod"
    #: which workloads each bot runs: the automod stack only its own
    # ``automod`` goes first, so that both stacks run it in the same place (right after the warm-up)
    ordered = sorted(workloads, key=lambda w: w != "automod")
    plan = {"bare": ordered, "stack": ordered, "automod": [w for w in workloads if w == "automod"]}
    results: dict[str, dict[str, list[float]]] = {w: {b: [] for b, ws in plan.items() if w in ws} for w in workloads}
    cpu: dict[str, dict[str, list[float]]] = {w: {b: [] for b in results[w]} for w in workloads}
    lean: dict[str, list[float]] = {w: [] for w in workloads}
    extras: dict[str, dict[str, int]] = {w: dict.fromkeys(results[w], 0) for w in workloads}
    acted: list[float] = []
    exempt: list[float] = []
    memory: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession() as http, scratch_database() as dsn, scratch_database() as automod_dsn, \
            _simulator(http, guilds, logs / "simulator.log") as sim:
        bare_port, metrics_base, automod_metrics = free_port(), free_port(), free_port()
        if plan["automod"]:
            await _automod_everywhere(automod_dsn, await sim.guild_ids(guilds))
        stack_args = ["-m", "shard", "--cluster", "0", "--shard-ids", "0", "--shard-count", "1",
                      "--max-concurrency", "1"]
        bots = {
            "bare": Bot("bare", profiled(_without([str(ROOT / "bench" / "_bare_bot.py"), sim.url, TOKEN,
                                                     str(bare_port)], bare_without),
                                           profile / "bare.prof" if profile else None), {},
                         f"http://127.0.0.1:{bare_port}/count", logs / "bare.log"),
            "stack": Bot("stack", profiled(_without(stack_args, stack_without),
                                             profile / "stack.prof" if profile else None),
                          _stack_env(sim, dsn, prefix, metrics_base, stack_env),
                          f"http://127.0.0.1:{metrics_base}/metrics", logs / "stack.log"),
        }
        if plan["automod"]:
            bots["automod"] = Bot("automod", profiled(_without(stack_args, stack_without),
                                                        profile / "automod.prof" if profile else None),
                                   _stack_env(sim, automod_dsn, automod_prefix, automod_metrics, stack_env),
                                   f"http://127.0.0.1:{automod_metrics}/metrics", logs / "automod.log")
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
                        await bot.configs_loaded(http, guilds)
                        paused_before = await bot.metric(http, "innkeeper_gc_pause_seconds_sum", total=True)
                        for workload in plan[name]:
                            skipped = await bot.metric(http, "innkeeper_messages_skipped_total")
                            deletes = await bot.metric(http, "innkeeper_automod_actions_total", total=True)
                            spared = await bot.metric(http, "innkeeper_automod_exempt_total")
                            rate, us, extra = await _run(sim, bot, workload, events, spam_every)
                            extras[workload][name] += extra
                            if skipped is not None and name == "stack":
                                after = await bot.metric(http, "innkeeper_messages_skipped_total") or 0.0
                                # the bot also receives its own replies (one per ping), which it skips too
                                received = events + ((events + 9) // 10 if workload == "commands" else 2)
                                lean[workload].append((after - skipped) / received)
                            if name == "automod":
                                done = await bot.metric(http, "innkeeper_automod_actions_total", total=True) or 0.0
                                acted.append(done - (deletes or 0.0))
                                left = await bot.metric(http, "innkeeper_automod_exempt_total") or 0.0
                                exempt.append(left - (spared or 0.0))
                            results[workload][name].append(rate)
                            cpu[workload][name].append(us)
                        memory[name]["rss_after_burst_mib"] = bot.rss_mib()
                        await bot.save_metrics(http, logs / f"{name}-metrics.txt")
                        frozen = await bot.metric(http, "innkeeper_gc_frozen_objects")
                        if frozen is not None:
                            memory[name]["gc_frozen_objects"] = frozen
                            paused = await bot.metric(http, "innkeeper_gc_pause_seconds_sum", total=True)
                            memory[name]["gc_pause_s"] = (paused or 0.0) - (paused_before or 0.0)
                    finally:
                        bot.stop()
        finally:
            for bot in bots.values():
                bot.stop()
            await delete_redis_prefix(prefix)
            await delete_redis_prefix(automod_prefix)
    out: dict[str, Any] = {"events": events, "runs": runs, "guilds": guilds, "logs": str(logs), "workloads": {},
                           "stack_env": stack_env or {}, "stack_without": stack_without,
                           "bare_without": bare_without,
                           "memory": memory, "load_average": os.getloadavg()[0]}
    for workload, by_bot in results.items():
        medians = {name: statistics.median(v) for name, v in by_bot.items()}
        out["workloads"][workload] = {"runs": by_bot, "median": medians,
                                      "ratio": medians["stack"] / medians["bare"],
                                      "cpu_us_per_event": {k: statistics.median(v) for k, v in cpu[workload].items()},
                                      "extra_replies": extras[workload],
                                      "stack_unparsed_share": (statistics.median(lean[workload])
                                                               if lean[workload] else None)}
    if "automod" in results:
        fig = out["workloads"]["automod"]
        fig["automod_on_off"] = fig["median"]["automod"] / fig["median"]["stack"]
        fig["automod_actions_per_run"] = statistics.median(acted) if acted else 0.0
        # rule-breaking messages whose author is a moderator (the world's members include some): not acted on
        fig["automod_exempt_per_run"] = statistics.median(exempt) if exempt else 0.0
        # the same cost in the bots' own CPU per event, which a noisy neighbour disturbs less than throughput
        fig["automod_cpu_on_off"] = fig["cpu_us_per_event"]["stack"] / fig["cpu_us_per_event"]["automod"]
        fig["rule_breaking"] = sum(1 for n in range(1, events) if n % spam_every == spam_every // 2)
        if "messages" in results:
            plain = out["workloads"]["messages"]["median"]["stack"]
            fig["automod_vs_stack_messages"] = fig["median"]["automod"] / plain
    return out


#: The ``traffic`` workload's world (``--traffic-*``): sized so that bare discord.py chunks it in a few
#: seconds and a series of runs takes a few minutes on the 2-core box.
TRAFFIC_EVENTS, TRAFFIC_GUILDS, TRAFFIC_HUGE, TRAFFIC_HUGE_MEMBERS, TRAFFIC_SHARDS = 200_000, 1000, 2, 25_000, 2


def _large_world(guilds: int, huge: int, huge_members: int, seed: int) -> list[str]:
    """Simulator flags of the ``traffic`` world: realistic sizes, ``huge`` guilds of ``huge_members``."""
    return ["--shards", str(TRAFFIC_SHARDS), "--max-concurrency", str(TRAFFIC_SHARDS), "--identify-window", "0.1",
            "--guilds", str(guilds), "--guild-sizes", "realistic", "--huge-guilds", str(huge),
            "--max-member-count", str(huge_members), "--seed", str(seed), "--global-rate", str(SIM_GLOBAL_RATE),
            "--message-limit", "1000000", "--message-window", "1", "--resume-buffer", "1000"]


async def _pingers(sim: Sim, run: int) -> list[dict[str, str]]:
    """One ``!ping`` per shard, each in the shard's largest guild among the first listed, from the ``run``-th
    member (a new user each run, so the stack's throttle never binds across runs)."""
    chosen: dict[int, dict[str, Any]] = {}
    for guild in (await sim.world(limit=200))["guilds"]:
        best = chosen.get(guild["shard_id"])
        if guild["members"] and (best is None or len(guild["members"]) > len(best["members"])):
            chosen[guild["shard_id"]] = guild
    if len(chosen) < TRAFFIC_SHARDS:
        raise RuntimeError("traffic: the world has a shard without a guild among its first 200")
    return [{"guild_id": g["id"], "channel_id": g["channels"][0], "author_id": g["members"][run % len(g["members"])],
             "content": "!ping"} for _, g in sorted(chosen.items())]


async def _traffic_run(sim: Sim, bot: Bot, events: int, seed: int, pings: list[dict[str, str]]
                       ) -> tuple[float, float, int, int]:
    """One ``traffic`` run: blend events per second, the bot's CPU µs per blend event, the replies beyond one
    per ping, and the events the simulator dispatched to the bot (what its intents let through)."""
    stats = await sim.stats()
    before, dispatched = int(stats["messages_created"]), int(stats["dispatched"])
    cpu0 = bot.cpu_s()
    started = time.perf_counter()
    await sim.load({"rate": 0, "count": events, "kind": "guild_traffic", "seed": seed})

    async def replied() -> None:
        while True:  # every blend event handed to the gateway's sessions
            if not (await sim.load_status()).get("running"):
                break
            await asyncio.sleep(0.02)
        for ping in pings:  # behind every event of its shard
            async with sim.http.post(sim.url + "/_sim/messages", json=ping) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"traffic: ping refused: {resp.status} {await resp.text()}")
        while True:  # every reply out, and (the stack) no message parked
            if await sim.created() - before >= len(pings) and not await bot.metric(sim.http,
                                                                                   "innkeeper_messages_parked"):
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(replied(), timeout=300)
    except TimeoutError as exc:
        raise RuntimeError(f"traffic: {bot.name} did not answer every ping within 300 s") from exc
    elapsed = time.perf_counter() - started
    cpu = bot.cpu_s() - cpu0
    await asyncio.sleep(1.0)  # a reply that comes later still than this is not seen: a lower bound
    stats = await sim.stats()
    extra = int(stats["messages_created"]) - before - len(pings)
    # the bot's replies come back to it as MESSAGE_CREATEs too: they are not blend events
    received = int(stats["dispatched"]) - dispatched - 2 * len(pings)
    return events / elapsed, cpu / events * 1e6, extra, received


async def traffic_benchmark(runs: int, events: int = TRAFFIC_EVENTS, guilds: int = TRAFFIC_GUILDS,
                            huge: int = TRAFFIC_HUGE, huge_members: int = TRAFFIC_HUGE_MEMBERS, seed: int = 1
                            ) -> dict[str, Any]:
    """The ``traffic`` workload (module docstring): ``runs`` interleaved runs per bot, each bot start against a
    fresh simulator of the same world. Returns the workload's figures, as :func:`benchmark` does per workload,
    with what each bot received, its READY time and its RSS."""
    logs = Path(tempfile.mkdtemp(prefix="ik-bench-traffic-"))
    prefix = f"ikbench-{uuid.uuid4().hex[:10]}"
    names = ("bare", "stack")
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    received: dict[str, list[int]] = {n: [] for n in names}
    ready_s: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, dict[str, list[float]]] = {n: {"ready": [], "after": []} for n in names}
    extras = dict.fromkeys(names, 0)
    world: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http, scratch_database() as dsn:
        try:
            for run in range(runs):
                for name in names:
                    async with simulator(http, logs / f"sim-{name}-{run}.log",
                                         _large_world(guilds, huge, huge_members, seed)) as sim:
                        if not world:
                            world = await sim.world(limit=1)
                        log = logs / f"{name}-{run}.log"
                        bot = (bare_bot(sim.url, log, members=True, presences=True) if name == "bare" else
                               stack_bot(sim.url, log, dsn=dsn, prefix=prefix, shard_count=TRAFFIC_SHARDS))
                        try:
                            started = time.monotonic()
                            await bot.start(http, timeout=600)  # the bare bot: once every guild is chunked
                            ready_s[name].append(time.monotonic() - started)
                            await bot.configs_loaded(http, int(world["total"]))
                            rss[name]["ready"].append(bot.rss_mib())
                            rate, us, extra, got = await _traffic_run(sim, bot, events, seed, await _pingers(sim, run))
                            rates[name].append(rate)
                            cpu[name].append(us)
                            received[name].append(got)
                            extras[name] += extra
                            rss[name]["after"].append(bot.rss_mib())
                        finally:
                            bot.stop()
        finally:
            await delete_redis_prefix(prefix)
    medians = {n: statistics.median(v) for n, v in rates.items()}
    return {"runs": rates, "median": medians, "ratio": medians["stack"] / medians["bare"],
            "cpu_us_per_event": {n: statistics.median(v) for n, v in cpu.items()}, "extra_replies": extras,
            "stack_unparsed_share": None, "events": events,
            "received_per_run": {n: statistics.median(v) for n, v in received.items()},
            "ready_s": {n: statistics.median(v) for n, v in ready_s.items()},
            "rss_ready_mib": {n: statistics.median(v["ready"]) for n, v in rss.items()},
            "rss_after_mib": {n: statistics.median(v["after"]) for n, v in rss.items()},
            "world": {"guilds": int(world.get("total", guilds)), "huge": huge, "huge_members": huge_members,
                      "shards": TRAFFIC_SHARDS, "seed": seed},
            "logs": str(logs)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guilds", type=int, default=1000)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--spam-every", type=int, default=SPAM_EVERY,
                        help="automod workload: one message in this many is an invite link (default %(default)s)")
    parser.add_argument("--traffic-events", type=int, default=TRAFFIC_EVENTS,
                        help="traffic workload: guild_traffic events per run (default %(default)s)")
    parser.add_argument("--traffic-guilds", type=int, default=TRAFFIC_GUILDS,
                        help="traffic workload: guilds of realistic sizes, the large ones among them "
                             "(default %(default)s)")
    parser.add_argument("--traffic-huge", type=int, default=TRAFFIC_HUGE,
                        help="traffic workload: guilds of exactly --traffic-huge-members members (default %(default)s)")
    parser.add_argument("--traffic-huge-members", type=int, default=TRAFFIC_HUGE_MEMBERS,
                        help="traffic workload: the large guilds' size, and the size cap (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run each bot under cProfile, writing DIR/bare.prof and DIR/stack.prof (the last run's)")
    parser.add_argument("--stack-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment variable for our stack, e.g. INNKEEPER_EVENT_LOOP=asyncio")
    parser.add_argument("--stack-without", default="", metavar="MODS",
                        help="run our stack as if these packages were not installed, e.g. orjson,hiredis")
    parser.add_argument("--bare-without", default="", metavar="MODS",
                        help="run bare discord.py as if these packages were not installed, e.g. orjson")
    args = parser.parse_args(argv)
    stack_env = {}
    for item in args.stack_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--stack-env: expected NAME=VALUE, got {item!r}")
        stack_env[name] = value
    workloads = [w for w in args.workloads.split(",") if w]
    if any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads: choose from {', '.join(WORKLOADS)}")
    if len(set(workloads)) != len(workloads):
        parser.error("--workloads: name each workload once")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.spam_every < 2:
        parser.error("--spam-every must be at least 2")
    classic = [w for w in workloads if w != "traffic"]  # traffic runs on a world of its own
    out: dict[str, Any] = {"events": args.events, "runs": args.runs, "guilds": args.guilds, "workloads": {},
                           "memory": {}, "load_average": os.getloadavg()[0], "logs": None}
    if classic:
        out = asyncio.run(benchmark(args.events, args.runs, args.guilds, classic, args.profile, args.spam_every,
                                    stack_env=stack_env, stack_without=args.stack_without,
                                    bare_without=args.bare_without))
    if "traffic" in workloads:
        out["workloads"]["traffic"] = asyncio.run(traffic_benchmark(
            args.runs, args.traffic_events, args.traffic_guilds, args.traffic_huge, args.traffic_huge_members))
        out["load_average"] = os.getloadavg()[0]
    print(f"dispatch: {args.runs} interleaved runs per bot; medians (events/s handled; ratio stack/bare)"
          + (f"; {args.events} MESSAGE_CREATEs over {args.guilds} guilds on one shard" if classic else ""))
    for workload, fig in out["workloads"].items():
        runs = {k: ", ".join(f"{v:,.0f}" for v in vals) for k, vals in fig["runs"].items()}
        print(f"  {workload:9s} bare {fig['median']['bare']:>9,.0f}/s ({runs['bare']})   "
              f"stack {fig['median']['stack']:>9,.0f}/s ({runs['stack']})   ratio {fig['ratio']:.2f}   "
              f"CPU/event bare {fig['cpu_us_per_event']['bare']:.0f} µs, "
              f"stack {fig['cpu_us_per_event']['stack']:.0f} µs; "
              f"stack left {fig['stack_unparsed_share'] or 0:.0%} unparsed; late or duplicate replies "
              f"bare {fig['extra_replies']['bare']}, stack {fig['extra_replies']['stack']}")
        if workload == "traffic":
            w = fig["world"]
            print(f"  {'':9s} {fig['events']:,} guild_traffic events per run over {w['guilds']:,} guilds "
                  f"({w['huge']} of {w['huge_members']:,} members) on {w['shards']} shards; received per run bare "
                  f"{fig['received_per_run']['bare']:,.0f}, stack {fig['received_per_run']['stack']:,.0f}; READY "
                  f"bare {fig['ready_s']['bare']:.1f} s, stack {fig['ready_s']['stack']:.1f} s; RSS ready → after "
                  f"bare {fig['rss_ready_mib']['bare']:.1f} → {fig['rss_after_mib']['bare']:.1f} MiB, stack "
                  f"{fig['rss_ready_mib']['stack']:.1f} → {fig['rss_after_mib']['stack']:.1f} MiB")
        if "automod_on_off" in fig:
            against = fig.get("automod_vs_stack_messages")
            print(f"  {'':9s} stack with automod high {fig['median']['automod']:>9,.0f}/s ({runs['automod']}), "
                  f"CPU/event {fig['cpu_us_per_event']['automod']:.0f} µs; {fig['rule_breaking']} rule-breaking "
                  f"messages per run, {fig['automod_actions_per_run']:.0f} acted on, "
                  f"{fig['automod_exempt_per_run']:.0f} left alone (a moderator's); late or duplicate replies "
                  f"{fig['extra_replies']['automod']}")
            print(f"  {'':9s} automod on / off (this stream) {fig['automod_on_off']:.3f}"
                  + (f"; automod on / stack messages {against:.3f}" if against is not None else "")
                  + f" (target: at least 0.90); in CPU per event off / on {fig['automod_cpu_on_off']:.3f}")
    for name, mem in out["memory"].items():
        gc_note = (f"; {mem['gc_frozen_objects']:,.0f} objects frozen, {mem['gc_pause_s']:.2f} s in GC pauses "
                   f"during the workloads of one bot start" if "gc_frozen_objects" in mem else "")
        print(f"  memory {name:5s} RSS ready {mem['rss_ready_mib']:.1f} MiB, after the bursts "
              f"{mem.get('rss_after_burst_mib', float('nan')):.1f} MiB{gc_note}")
    if stack_env or args.stack_without or args.bare_without:
        print(f"  variant: stack env {stack_env or '-'}, stack without {args.stack_without or '-'}, "
              f"bare without {args.bare_without or '-'}")
    logs = ", ".join(str(d) for d in (out["logs"], out["workloads"].get("traffic", {}).get("logs")) if d)
    print(f"  host: {os.cpu_count()} cpus, load average {out['load_average']:.2f}; logs in {logs}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0
