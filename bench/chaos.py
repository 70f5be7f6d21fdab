"""The chaos suite: what users and Discord see while clusters die, restart, and their dependencies fail.

``python -m bench chaos [--short] [--cases kill,rolling,restart,redis,postgres,faults,reshard] [--kills 10] [--shards 8]
[--clusters 4] [--window 5] [--down 30] [--rate 4] [--events 50] [--json FILE]``

One environment for every case: a simulator (identify window ``--window`` s, 5 as Discord's), a
private ``redis-server`` and a TCP proxy in front of PostgreSQL (so both can be taken down), and the
clusters under supervisord through :class:`cluster.launcher.Launcher`, as ``innkeeper launch`` runs
them. A steady load runs throughout: guild messages (the simulator's ``/_sim/load``, ``--events``
per second) and slash commands from users (``--rate`` per second, the mix of
``bench/_slash_load.py``: cheap and database commands, each waiting for its answer).

The cases, one after the other:

* ``kill``: ``kill -9`` of a random cluster, ``--kills`` times (the next once all shards are live);
* ``rolling``: ``innkeeper restart --rolling``;
* ``restart``: ``innkeeper restart``, every cluster at once;
* ``redis``: Redis down for ``--down`` seconds, then back (empty: it keeps nothing on disk);
* ``postgres``: PostgreSQL unreachable for ``--down`` seconds (the proxy refuses and cuts connections);
* ``faults``: simulator faults on a random shard each: ``reconnect``, resumable and non-resumable
  ``invalid_session``, ``silent``; then a burst of 20 REST 500s;
* ``reshard``: ``innkeeper reshard`` to twice the shards (last: the shard count changes), the new
  generation beside the old one, switched over at one instant.

Each row is read from the simulator and the load generator, never from the bot's own counters:

* **events lost**: the simulator's ``lost`` (events buffered for a session whose resume window ended,
  or meant for a shard with no live or resumable session);
* **unanswered**: slash commands sent during the case (from its start until 3 s after its end) that
  got no answer at all (an error code such as "database unavailable" is an answer);
* **twice**: interaction callbacks to an interaction already answered (``duplicate_interaction_callbacks``);
* **identifies**: IDENTIFYs the simulator received during the case;
* **ready s**: from the disruption to every shard live again (0 when none went down);
* **answers back s**: from the disruption to the last command sent that went unanswered (0: none).

``--short`` runs a small version for ``make test`` (``tests/e2e/test_chaos.py``): 4 shards in 2
clusters, a 0.2 s window, two kills, 3 s outages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._bots import TOKEN, Sim, simulator
from bench._db_common import scratch_database
from bench._procs import free_port
from bench._slash_load import Result, post, request_for

__all__ = ("main", "run")

#: A command sent this long after a case ends still belongs to it (its answer may be late).
TAIL_S = 3.0
#: The guilds whose members send the slash commands.
COMMAND_GUILDS = 40


@dataclass
class Options:
    """What to run, and how big (see the module docstring)."""

    cases: tuple[str, ...] = ("kill", "rolling", "restart", "redis", "postgres", "faults", "reshard")
    kills: int = 10
    shards: int = 8
    clusters: int = 4
    guilds: int = 400
    window: float = 5.0
    down_s: float = 30.0
    rate: float = 4.0
    events_per_s: float = 50.0
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ik-chaos-")))

    @classmethod
    def short(cls) -> Options:
        return cls(kills=2, shards=4, clusters=2, guilds=60, window=0.2, down_s=3.0, rate=3.0, events_per_s=20.0)


@dataclass
class Row:
    case: str
    runs: int = 0
    lost: int = 0
    unanswered: int = 0
    twice: int = 0
    identifies: int = 0
    ready_s: list[float] = field(default_factory=list)
    back_s: list[float] = field(default_factory=list)
    commands: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "runs": self.runs, "events_lost": self.lost, "commands": self.commands,
                "unanswered": self.unanswered, "answered_twice": self.twice, "identifies": self.identifies,
                "ready_s_median": round(statistics.median(self.ready_s), 2) if self.ready_s else None,
                "ready_s_max": round(max(self.ready_s), 2) if self.ready_s else None,
                "answers_back_s_median": round(statistics.median(self.back_s), 2) if self.back_s else None}


class Chaos:
    """The environment and the load (see the module docstring)."""

    def __init__(self, opts: Options, http: aiohttp.ClientSession, sim: Sim, launcher: Any, redis: Any,
                 pg: Any) -> None:
        self.opts, self.http, self.sim, self.launcher, self.redis, self.pg = opts, http, sim, launcher, redis, pg
        self.results: list[Result] = []
        self.rng = random.Random(7)
        self._load: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.guilds: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        #: The shard count running now (a reshard changes it).
        self.shards = opts.shards

    # --- load -------------------------------------------------------------------------------------
    async def start_load(self) -> None:
        world = await self.sim.world(self.opts.guilds)
        self.guilds = world["guilds"][:COMMAND_GUILDS]
        await self.sim.load({"kind": "message_create", "rate": self.opts.events_per_s, "seconds": 3600})
        self._load = asyncio.create_task(self._commands(), name="chaos-commands")

    async def _commands(self) -> None:
        interval = 1.0 / self.opts.rate
        next_at = time.monotonic()
        while True:
            next_at += interval
            req = request_for(self.rng.choice(self.guilds), self.rng)
            task = asyncio.create_task(self._one(req))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _one(self, req: dict[str, Any]) -> None:
        self.results.append(await post(self.http, self.sim.url, req, time.monotonic() - self.t0))

    async def stop_load(self) -> None:
        if self._load is not None:
            self._load.cancel()
            await asyncio.gather(self._load, return_exceptions=True)
        await asyncio.gather(*self._inflight, return_exceptions=True)
        async with self.http.delete(self.sim.url + "/_sim/load"):
            pass

    # --- readings ---------------------------------------------------------------------------------
    async def all_live(self) -> bool:
        live = (await self.sim.stats())["live_shards"]
        return all(live.get(str(s), 0) >= 1 for s in range(self.shards))

    async def settle(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not await self.all_live():
            if time.monotonic() > deadline:
                raise RuntimeError(f"shards not all live after {timeout:.0f} s; see {self.opts.logs}")
            await asyncio.sleep(0.1)

    async def measure(self, row: Row, disrupt: Callable[[], Awaitable[None]]) -> None:
        """Run one disruption and add what it cost to ``row``."""
        before = await self.sim.stats()
        start = time.monotonic() - self.t0
        went_down: float | None = None
        ready_at: float | None = None

        async def watch() -> None:
            nonlocal went_down, ready_at
            while True:
                live = await self.all_live()
                now = time.monotonic() - self.t0
                if not live and went_down is None:
                    went_down = now
                elif live and went_down is not None and ready_at is None:
                    ready_at = now
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            await disrupt()
            await self.settle()
            await asyncio.sleep(TAIL_S)  # commands sent just before the end get their answers
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        end = time.monotonic() - self.t0
        after = await self.sim.stats()
        sent = [r for r in self.results if start <= r.sent_at <= end]
        failed = [r for r in sent if r.status != 200]
        row.runs += 1
        row.commands += len(sent)
        row.unanswered += len(failed)
        row.lost += after["lost"] - before["lost"]
        row.twice += after.get("duplicate_interaction_callbacks", 0) - before.get("duplicate_interaction_callbacks", 0)
        row.identifies += after["identifies"] - before["identifies"]
        row.ready_s.append(round((ready_at - start) if ready_at is not None else 0.0, 2))
        row.back_s.append(round(max((r.sent_at for r in failed), default=start) - start, 2))

    # --- cases ------------------------------------------------------------------------------------
    async def _cluster_pids(self) -> dict[str, int]:
        infos = await self.launcher.supervisor.call("getAllProcessInfo")
        return {i["name"]: i["pid"] for i in infos if i["group"].startswith("clusters") and i["pid"]}

    async def kill(self, row: Row) -> None:
        for _ in range(self.opts.kills):
            async def disrupt() -> None:
                pids = await self._cluster_pids()
                name = self.rng.choice(sorted(pids))
                os.kill(pids[name], 9)
                deadline = time.monotonic() + 60  # back under a new pid (supervisord, the crash guard)
                while (await self._cluster_pids()).get(name) in (None, pids[name]):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} was not restarted; see {self.opts.logs}")
                    await asyncio.sleep(0.05)
            await self.measure(row, disrupt)

    async def rolling(self, row: Row) -> None:
        await self.measure(row, lambda: self.launcher.restart(rolling=True))

    async def reshard(self, row: Row) -> None:
        from cluster.reshard import Resharder

        async def disrupt() -> None:
            await Resharder(self.launcher).run(shards=self.shards * 2, clusters=self.opts.clusters * 2)
            self.shards *= 2
        await self.measure(row, disrupt)

    async def restart_all(self, row: Row) -> None:
        await self.measure(row, lambda: self.launcher.restart())

    async def redis_down(self, row: Row) -> None:
        async def disrupt() -> None:
            self.redis.kill()
            await asyncio.sleep(self.opts.down_s)
            await asyncio.to_thread(self.redis.start)
        await self.measure(row, disrupt)

    async def postgres_down(self, row: Row) -> None:
        async def disrupt() -> None:
            await self.pg.stop()
            await asyncio.sleep(self.opts.down_s)
            await self.pg.start()
        await self.measure(row, disrupt)

    async def faults(self, rows: dict[str, Row]) -> None:
        kinds: list[tuple[str, dict[str, Any]]] = [
            ("reconnect", {"kind": "reconnect"}), ("invalid_session resumable", {"kind": "invalid_session"}),
            ("invalid_session new", {"kind": "invalid_session", "resumable": False}),
            ("silent", {"kind": "silent"})]
        for label, body in kinds:
            async def disrupt(body: dict[str, Any] = body) -> None:
                shard = self.rng.randrange(self.opts.shards)
                async with self.http.post(self.sim.url + "/_sim/faults", json={**body, "shard_id": shard}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"fault refused: {await r.text()}")
                if body["kind"] == "silent":  # the watchdog needs INNKEEPER_ZOMBIE_AFTER to notice
                    await asyncio.sleep(ZOMBIE_AFTER_S * 2)
            await self.measure(rows.setdefault(label, Row(label)), disrupt)

        async def burst() -> None:
            async with self.http.post(self.sim.url + "/_sim/faults",
                                      json={"kind": "http_error", "status": 500, "count": 20}) as r:
                if r.status != 200:
                    raise RuntimeError(f"fault refused: {await r.text()}")
        await self.measure(rows.setdefault("REST 5xx burst", Row("REST 5xx burst")), burst)


#: The watchdog's threshold in the chaos runs: silent shards are found within it.
ZOMBIE_AFTER_S = 3.0


async def run(opts: Options) -> dict[str, Any]:
    """Run the suite; the rows and the environment's figures."""
    from cluster.launcher import Launcher
    from innkeeper.settings import Settings
    from tests.support import PgProxy, PrivateRedis

    opts.logs.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Row] = {}
    redis = PrivateRedis(opts.logs / "redis.log")
    await asyncio.to_thread(redis.start)
    async with scratch_database() as dsn, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0)) as http, simulator(http, opts.logs / "sim.log", [
                "--guilds", str(opts.guilds), "--shards", str(opts.shards), "--max-concurrency", "1",
                "--identify-window", str(opts.window), "--resume-buffer", "100000",
                "--heartbeat-interval-ms", "1000"]) as sim:
        pg = PgProxy(dsn)
        await pg.start()
        run_dir = Path(tempfile.mkdtemp(prefix="ik-chaos-run-", dir="/tmp"))
        settings = Settings.from_env({
            **{k: v for k, v in os.environ.items() if k == "PATH"},
            "DISCORD_TOKEN": TOKEN, "DISCORD_API_URL": sim.url, "REDIS_URL": redis.url, "DATABASE_URL": pg.url,
            "INNKEEPER_REDIS_PREFIX": f"chaos-{uuid.uuid4().hex[:8]}", "INNKEEPER_RUN_DIR": str(run_dir),
            "INNKEEPER_STATUS_PORT": str(free_port()), "INNKEEPER_METRICS_PORT_BASE": "0",
            "INNKEEPER_IDENTIFY_WINDOW": str(opts.window), "INNKEEPER_IDENTIFY_MARGIN": "0",
            "INNKEEPER_HEARTBEAT_INTERVAL": "1", "INNKEEPER_SYNC_COMMANDS": "true", "INNKEEPER_LOG_LEVEL": "INFO",
            "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_IPC_KEYS": "dev",
            "INNKEEPER_ZOMBIE_AFTER": str(ZOMBIE_AFTER_S), "INNKEEPER_CRASH_LOOP_MAX": "1000",
        })
        launcher = Launcher(settings, out=lambda line: None)
        try:
            await launcher.launch(shards=opts.shards, clusters=opts.clusters, timeout=600)
            chaos = Chaos(opts, http, sim, launcher, redis, pg)
            await chaos.start_load()
            await asyncio.sleep(3)  # the load runs before the first case
            for case in opts.cases:
                if case == "kill":
                    await chaos.kill(rows.setdefault("kill -9", Row("kill -9")))
                elif case == "rolling":
                    await chaos.rolling(rows.setdefault("rolling restart", Row("rolling restart")))
                elif case == "restart":
                    await chaos.restart_all(rows.setdefault("restart, all at once", Row("restart, all at once")))
                elif case == "redis":
                    await chaos.redis_down(rows.setdefault(f"Redis down {opts.down_s:g} s",
                                                           Row(f"Redis down {opts.down_s:g} s")))
                elif case == "postgres":
                    await chaos.postgres_down(rows.setdefault(f"PostgreSQL down {opts.down_s:g} s",
                                                              Row(f"PostgreSQL down {opts.down_s:g} s")))
                elif case == "faults":
                    await chaos.faults(rows)
                elif case == "reshard":
                    name = f"reshard {chaos.shards} → {chaos.shards * 2} shards"
                    await chaos.reshard(rows.setdefault(name, Row(name)))
                else:
                    raise ValueError(f"unknown case {case!r}")
            await chaos.stop_load()
            total = len(chaos.results)
        finally:
            try:
                await launcher.stop()
            finally:
                await pg.stop()
                pg.reserved.close()
                redis.kill()
    return {"rows": [r.as_dict() for r in rows.values()], "commands_sent": total, "shards": opts.shards,
            "clusters": opts.clusters, "window_s": opts.window, "down_s": opts.down_s, "rate_per_s": opts.rate,
            "events_per_s": opts.events_per_s, "logs": str(opts.logs), "load_average": os.getloadavg()[0]}


def _print(out: dict[str, Any]) -> None:
    print(f"chaos: {out['shards']} shards in {out['clusters']} clusters, window {out['window_s']} s, "
          f"{out['rate_per_s']} commands/s and {out['events_per_s']} messages/s throughout "
          f"({out['commands_sent']} commands); load {out['load_average']:.1f}; logs {out['logs']}")
    head = ("case", "runs", "lost", "commands", "unanswered", "twice", "identifies", "ready s (med/max)",
            "answers back s")
    print(" | ".join(head))
    for r in out["rows"]:
        print(" | ".join(str(x) for x in (
            r["case"], r["runs"], r["events_lost"], r["commands"], r["unanswered"], r["answered_twice"],
            r["identifies"], f"{r['ready_s_median']}/{r['ready_s_max']}", r["answers_back_s_median"])))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the small version run by make test")
    parser.add_argument("--cases", default=None,
                        help="comma-separated: kill,rolling,restart,redis,postgres,faults,reshard")
    parser.add_argument("--kills", type=int)
    parser.add_argument("--shards", type=int)
    parser.add_argument("--clusters", type=int)
    parser.add_argument("--window", type=float, help="the simulator's identify window (s)")
    parser.add_argument("--down", type=float, help="seconds Redis and PostgreSQL stay down")
    parser.add_argument("--rate", type=float, help="slash commands per second")
    parser.add_argument("--events", type=float, help="guild messages per second")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    opts = Options.short() if args.short else Options()
    for name, attr in (("kills", "kills"), ("shards", "shards"), ("clusters", "clusters"), ("window", "window"),
                       ("down", "down_s"), ("rate", "rate"), ("events", "events_per_s")):
        if getattr(args, name) is not None:
            setattr(opts, attr, getattr(args, name))
    if args.cases:
        opts.cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    out = asyncio.run(run(opts))
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0
