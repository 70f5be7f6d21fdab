"""The command pipeline's cost, and command latency under load across clusters.

``python -m bench commands_pipeline [overhead|load|all] [--n 400] [--rate 200] [--seconds 20]
[--clusters 4] [--json FILE]``

* ``overhead``: one simulator, one in-process ``ClusterBot`` (real PostgreSQL and Redis) with two
  commands that answer the same text: the pipeline's ``/ping`` and a bare discord.py hybrid
  ``/bareping`` added for the benchmark. ``--n`` of each, one at a time, interleaved; the latency is
  the simulator's (INTERACTION_CREATE sent → callback received). Also the pipeline's own CPU cost per
  command with no I/O (guild configuration cached, in-process throttle, usage buffered).
* ``load``: a simulator with 4 shards and ``--clusters`` ``python -m shard`` processes, then an
  open-loop stream of ``--rate`` slash commands per second for ``--seconds``, mixed over commands,
  guilds (so over every cluster) and members. Reports p50/p95/p99 latency, timeouts and outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import discord
from discord.ext import commands

from bench._procs import delete_redis_prefix, free_port
from bench._slash_load import open_loop, pct

__all__ = ("main",)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def _http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                        "Authorization": f"Bot {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - local simulator
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child in its own process group, output appended to ``log``."""
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=fh,  # noqa: S603 - fixed argv
                                stderr=subprocess.STDOUT, start_new_session=True)


@asynccontextmanager
async def _simulator(guilds: int, shards: int, log: Path) -> AsyncIterator[str]:
    port = free_port()
    proc = _spawn(["-m", "simulator", "--port", str(port), "--guilds", str(guilds), "--shards", str(shards),
                   "--max-concurrency", str(shards), "--identify-window", "0.2", "--token", TOKEN,
                   "--log-level", "WARNING"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _http("GET", url + "/_sim/stats", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the simulator did not start; see {log}")
            await asyncio.sleep(0.1)
        yield url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _env(sim_url: str, dsn: str, prefix: str) -> dict[str, str]:
    return {"DISCORD_TOKEN": TOKEN, "DISCORD_API_URL": sim_url, "DATABASE_URL": dsn, "INNKEEPER_REDIS_PREFIX": prefix,
            "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_IPC_KEYS": "dev", "INNKEEPER_LOG_LEVEL": "WARNING",
            "INNKEEPER_LOG_FORMAT": "json",
            "INNKEEPER_METRICS_PORT_BASE": str(free_port())}



# --- overhead ---------------------------------------------------------------------------------------
async def _cpu_cost(n: int) -> float:
    """Microseconds per command of Pipeline.execute with no I/O (the stages' own cost)."""
    from types import SimpleNamespace

    from discord.ext.commands.view import StringView

    from innkeeper.settings import Settings
    from ipc.throttle import MemoryThrottle
    from shard.pipeline import GuildConfig, Pipeline, command

    class Cog(commands.Cog):
        @command("x", description="x")
        async def x(self, ctx: commands.Context[Any], *, text: commands.Range[str, 1, 100] = "hi") -> None:
            return None

    class Config:
        cfg = GuildConfig(1)

        async def get(self, guild_id: int) -> GuildConfig:
            return self.cfg

        async def invalidate(self, guild_id: int) -> None:
            return None

    class Sink:
        def record(self, event: Any) -> None:
            return None

        async def append(self, event: Any) -> None:
            return None

    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    await bot.add_cog(Cog())
    bot.pipeline = Pipeline(Settings(), cluster_id=0, config=Config(), throttle=MemoryThrottle(),  # type: ignore[attr-defined]
                            usage=Sink(), audit=Sink(), errors=Sink())  # type: ignore[arg-type]
    cmd = bot.get_command("x")
    assert cmd is not None
    guild = SimpleNamespace(id=1, owner_id=2, shard_id=0)
    start = time.perf_counter()
    for i in range(n):
        author = SimpleNamespace(id=10_000 + i, roles=[], guild_permissions=discord.Permissions.none())
        msg = SimpleNamespace(guild=guild, author=author, channel=SimpleNamespace(id=5), _state=None)
        ctx = commands.Context(message=msg, bot=bot, view=StringView(""), prefix="!")  # type: ignore[arg-type]
        ctx.command = cmd
        await cmd.callback(cmd.cog, ctx, text="hello")  # type: ignore[arg-type]
    return (time.perf_counter() - start) / n * 1e6


async def overhead(n: int) -> dict[str, Any]:
    from bench._db_common import scratch_database
    from innkeeper.settings import Settings
    from shard.assembly import build_cluster
    from shard.context import ClusterContext

    class Bare(commands.Cog):
        @commands.hybrid_command(name="bareping", description="A bare discord.py command.")  # type: ignore[arg-type]
        async def bareping(self, ctx: commands.Context[Any]) -> None:
            shard = ctx.bot.get_shard(ctx.guild.shard_id if ctx.guild else 0)
            await ctx.send(f"Pong! shard {shard.id if shard else 0}, cluster 0, gateway n/a")

    prefix = f"ikbench-{uuid.uuid4().hex[:10]}"
    log = Path(tempfile.mkdtemp(prefix="ik-bench-")) / "simulator.log"
    async with scratch_database() as dsn, _simulator(200, 1, log) as sim:
        settings = Settings.from_env(_env(sim, dsn, prefix))
        ctx = ClusterContext.create(settings, cluster_id=0, shard_ids=[0], shard_count=1, max_concurrency=1)
        bot = build_cluster(ctx)
        await bot.add_cog(Bare())
        task = asyncio.create_task(bot.start(TOKEN))
        try:
            while not bot.is_ready() or bot.deps.database.schema_version is None:
                if task.done():
                    task.result()
                await asyncio.sleep(0.1)
            _, world = _http("GET", sim + "/_sim/world?limit=200")
            # one (guild, member) per distinct user, cycled, so that nobody hits the throttle
            pairs: dict[str, dict[str, Any]] = {}
            for g in world["guilds"]:
                for member in g["members"]:
                    pairs.setdefault(member, g)
            users = sorted(pairs)
            lat: dict[str, list[float]] = {"ping": [], "bareping": []}
            for i in range(n * 2 + 40):
                name = ("ping", "bareping")[i % 2]
                user = users[(i // 2) % len(users)]
                g = pairs[user]
                body = {"guild_id": g["id"], "channel_id": g["channels"][0], "user_id": user,
                        "name": name, "options": [], "timeout": 10}
                status, reply = await asyncio.to_thread(_http, "POST", sim + "/_sim/interactions", body)
                if status != 200:
                    raise RuntimeError(f"{name}: {status} {reply}")
                if not reply["callback"]["data"]["content"].startswith("Pong!"):
                    raise RuntimeError(f"{name}: unexpected answer {reply['callback']}")
                if i >= 40:  # warm-up
                    lat[name].append(float(reply["latency_ms"]))
        finally:
            await bot.close()
            with suppress(Exception):
                await asyncio.wait_for(task, 10)
            await ctx.aclose()
            await delete_redis_prefix(prefix)
    cpu = await _cpu_cost(20_000)
    out: dict[str, Any] = {"n": n, "cpu_us_per_command": round(cpu, 1)}
    for name, values in lat.items():
        out[name] = {"p50_ms": round(statistics.median(values), 2), "p99_ms": round(pct(values, 0.99), 2),
                     "mean_ms": round(statistics.fmean(values), 2)}
    out["overhead_p50_ms"] = round(out["ping"]["p50_ms"] - out["bareping"]["p50_ms"], 2)
    out["overhead_p99_ms"] = round(out["ping"]["p99_ms"] - out["bareping"]["p99_ms"], 2)
    return out


# --- load ---------------------------------------------------------------------------------------------
async def load(rate: float, seconds: float, clusters: int) -> dict[str, Any]:
    import aiohttp

    from bench._db_common import scratch_database

    shards = max(4, clusters)
    prefix = f"ikbench-{uuid.uuid4().hex[:10]}"
    logs = Path(tempfile.mkdtemp(prefix="ik-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    async with scratch_database() as dsn, _simulator(200, shards, logs / "simulator.log") as sim:
        env = {**os.environ, **_env(sim, dsn, prefix), "PYTHONUNBUFFERED": "1"}
        per = shards // clusters
        try:
            for c in range(clusters):
                ids = f"{c * per}-{(c + 1) * per - 1}" if per > 1 else str(c)
                procs.append(_spawn(["-m", "shard", "--cluster", str(c), "--shard-ids", ids, "--shard-count",
                                     str(shards)], logs / f"cluster-{c}.log", env))
            _, world = _http("GET", sim + "/_sim/world?limit=200")
            guilds = world["guilds"]
            probes = {g["shard_id"]: g for g in guilds}
            deadline = time.monotonic() + 120
            for shard_id, g in sorted(probes.items()):  # every cluster answers before the clock starts
                while True:
                    status, reply = await asyncio.to_thread(_http, "POST", sim + "/_sim/interactions", {
                        "guild_id": g["id"], "channel_id": g["channels"][0], "user_id": g["members"][1],
                        "name": "ping", "options": [], "timeout": 2})
                    if status == 200:
                        break
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        raise RuntimeError(f"shard {shard_id} never answered; logs in {logs}")
                    await asyncio.sleep(0.5)
            rng = random.Random(7)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                results, sent_in = await open_loop(http, sim, guilds, rate, seconds, rng)
        finally:
            for p in procs:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
            await delete_redis_prefix(prefix)
    ok = [r for r in results if r.status == 200 and r.latency_ms is not None]
    lat = [float(r.latency_ms) for r in ok if r.latency_ms is not None]
    by_label: dict[str, list[float]] = {}
    for r in ok:
        by_label.setdefault(r.label, []).append(float(r.latency_ms or 0))
    return {
        "rate": rate, "seconds": seconds, "clusters": clusters, "shards": shards, "sent": len(results),
        "achieved_rate": round(len(results) / sent_in, 1), "answered": len(ok),
        "timeouts_or_errors": len(results) - len(ok),
        "p50_ms": round(pct(lat, 0.5), 1), "p95_ms": round(pct(lat, 0.95), 1), "p99_ms": round(pct(lat, 0.99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "outcomes": dict(Counter(r.outcome for r in results)),
        "p99_by_command_ms": {k: round(pct(v, 0.99), 1) for k, v in sorted(by_label.items())},
        "logs": str(logs),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench commands_pipeline")
    parser.add_argument("part", nargs="?", choices=("overhead", "load", "all"), default="all")
    parser.add_argument("--n", type=int, default=400, help="commands of each kind for the overhead part")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.part in ("overhead", "all"):
        results["overhead"] = asyncio.run(overhead(args.n))
        print(json.dumps({"overhead": results["overhead"]}), flush=True)
    if args.part in ("load", "all"):
        results["load"] = asyncio.run(load(args.rate, args.seconds, args.clusters))
        print(json.dumps({"load": results["load"]}), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
