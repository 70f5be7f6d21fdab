"""The process plumbing shared by the benchmarks that run bare discord.py and our stack side by side.

A simulator process (:func:`simulator`, any flags), and the two bots as processes (:class:`Bot`,
built by :func:`bare_bot` and :func:`stack_bot`): start one, wait until it is READY, read its RSS
and CPU time, stop it. ``bench.dispatch`` and ``bench.memory`` use them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp

from bench._procs import cpu_seconds, free_port, memory_detail, rss_bytes, wait_http_ok

__all__ = ("ROOT", "TOKEN", "SIM_GLOBAL_RATE", "spawn", "stop", "Sim", "simulator", "Bot", "bare_bot", "stack_bot",
           "shards_up", "profiled")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
#: The simulator's bot-wide REST limit, raised far above Discord's 50/s so that the bots' own speed is
#: measured; our stack's shared limiter is told the same limit (``INNKEEPER_GLOBAL_RATE``), as an
#: operator with a raised limit would.
SIM_GLOBAL_RATE = 100_000


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python ARGS…`` in the project root, its output appended to ``log``, in a session of its own."""
    with log.open("ab") as fh:
        return subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, then SIGKILL it after 15 s."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Sim:
    """A running simulator's control API."""

    def __init__(self, http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.http, self.url, self.proc = http, url, proc

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(self.url + "/_sim/stats") as resp:
            return await resp.json()

    async def created(self) -> int:
        return int((await self.stats())["messages_created"])

    async def load(self, body: dict[str, Any]) -> None:
        async with self.http.post(self.url + "/_sim/load", json=body) as resp:
            if resp.status != 202:
                raise RuntimeError(f"load refused: {resp.status} {await resp.text()}")

    async def load_status(self) -> dict[str, Any]:
        async with self.http.get(self.url + "/_sim/load") as resp:
            return await resp.json()

    async def guild_ids(self, limit: int) -> list[int]:
        """The ids of the world's first ``limit`` guilds."""
        return [int(g["id"]) for g in (await self.world(limit))["guilds"]]

    async def world(self, limit: int = 1000, offset: int = 0) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/_sim/world?limit={limit}&offset={offset}") as resp:
            return await resp.json()


@asynccontextmanager
async def simulator(http: aiohttp.ClientSession, log: Path, args: Sequence[str]) -> AsyncIterator[Sim]:
    """A ``python -m simulator`` with ``args`` (besides port, token and log level), stopped on exit."""
    port = free_port()
    proc = spawn(["-m", "simulator", "--port", str(port), "--token", TOKEN, "--log-level", "WARNING", *args], log)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_http_ok(http, url + "/_sim/stats", timeout=60)
        yield Sim(http, url, proc)
    finally:
        stop(proc)


class Bot:
    """One bot process: how to start it, and whether it is READY."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], ready_url: str, log: Path) -> None:
        self.name, self.args, self.env, self.ready_url, self.log = name, args, env, ready_url, log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, http: aiohttp.ClientSession, timeout: float = 90.0) -> None:
        """Spawn the bot and wait until it is READY (the bare bot: every guild chunked that it chunks)."""
        self.proc = spawn(self.args, self.log, self.env)

        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            try:
                async with http.get(self.ready_url) as resp:
                    body = await resp.text()
                    return resp.status == 200 and ('"ready": true' in body or shards_up(body))
            except aiohttp.ClientError:
                return False

        deadline = time.monotonic() + timeout
        while not await ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not become READY; see {self.log}")
            await asyncio.sleep(0.2)

    async def configs_loaded(self, http: aiohttp.ClientSession, guilds: int, timeout: float = 60.0) -> None:
        """Wait until the stack holds every guild's configuration (the warm-up's loads can still be running
        when its last reply is out, on a busy machine); bare discord.py has none to load."""
        if not self.ready_url.endswith("/metrics"):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with http.get(self.ready_url) as resp:
                # a Redis hit, a load from PostgreSQL whose last query (the overrides) is done, or a
                # configuration the READY payload's prefetch brought in
                loaded = sum(float(line.rsplit(" ", 1)[1]) for line in (await resp.text()).splitlines()
                             if line.startswith(('innkeeper_cache_requests_total{namespace="guildcfg",result="hit"}',
                                                 'innkeeper_cache_requests_total{namespace="guildcfg",'
                                                 'result="prefetched"}',
                                                 'innkeeper_db_query_seconds_count{query="command_overrides.list"}')))
            if loaded >= guilds:
                return
            await asyncio.sleep(0.1)
        print(f"  warning: {self.name} had not read every guild's configuration after {timeout:.0f} s", file=sys.stderr)

    async def metric(self, http: aiohttp.ClientSession, name: str, *, total: bool = False) -> float | None:
        """A metric's value from the bot's ``/metrics`` (the stack's), or None; ``total``: summed over its labels."""
        if not self.ready_url.endswith("/metrics"):
            return None
        found: float | None = None
        async with http.get(self.ready_url) as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith((name + " ", name + "{")):
                    value = float(line.rsplit(" ", 1)[1])
                    if not total:
                        return value
                    found = (found or 0.0) + value
        return found

    async def save_metrics(self, http: aiohttp.ClientSession, path: Path) -> None:
        """Keep the bot's ``/metrics`` (the stack's) beside the logs, to check the figures against."""
        if self.ready_url.endswith("/metrics"):
            async with http.get(self.ready_url) as resp:
                text = await resp.text()
            await asyncio.to_thread(path.write_text, text)

    async def report(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The bare bot's ``/count`` answer (``{}`` for the stack)."""
        if self.ready_url.endswith("/metrics"):
            return {}
        async with http.get(self.ready_url) as resp:
            return dict(await resp.json())

    def cpu_s(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def rss_mib(self) -> float:
        assert self.proc is not None
        return rss_bytes(self.proc.pid) / 2**20

    def memory(self) -> dict[str, float]:
        """RSS, its anonymous and file-backed parts, USS, PSS (MiB) and threads (:func:`bench._procs.memory_detail`)."""
        assert self.proc is not None
        return memory_detail(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def shards_up(metrics: str) -> bool:
    """Whether the cluster's ``/metrics`` says every one of its shards is READY (``innkeeper_shard_up`` 1)."""
    states = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("innkeeper_shard_up{")]
    return bool(states) and all(s >= 1 for s in states)


def profiled(args: list[str], out: Path | None) -> list[str]:
    """``args`` run under cProfile writing to ``out`` (unchanged when ``out`` is None)."""
    return args if out is None else ["-m", "cProfile", "-o", str(out), *args]


def bare_bot(sim_url: str, log: Path, *, members: bool = False, presences: bool = False,
             profile: Path | None = None) -> Bot:
    """Bare discord.py (``bench/_bare_bot.py``); ``members``/``presences`` turn those intents on, with
    discord.py's default caching for them (every member cached, every guild chunked at start-up)."""
    port = free_port()
    flags = [*(["--members"] if members else []), *(["--presences"] if presences else [])]
    return Bot("bare", profiled([str(ROOT / "bench" / "_bare_bot.py"), sim_url, TOKEN, str(port), *flags], profile),
               {}, f"http://127.0.0.1:{port}/count", log)


def stack_bot(sim_url: str, log: Path, *, dsn: str, prefix: str, shard_count: int = 1,
              env: dict[str, str] | None = None, profile: Path | None = None) -> Bot:
    """Our cluster process (``python -m shard``) over shards ``0 … shard_count − 1``, every service on."""
    metrics_base = free_port()
    args = ["-m", "shard", "--cluster", "0", "--shard-ids", f"0-{shard_count - 1}", "--shard-count", str(shard_count),
            "--max-concurrency", str(shard_count)]
    return Bot("stack", profiled(args, profile),
               {"DISCORD_TOKEN": TOKEN, "DISCORD_API_URL": sim_url, "DATABASE_URL": dsn,
                "INNKEEPER_REDIS_PREFIX": prefix, "INNKEEPER_ENCRYPTION_KEYS": "dev",
                "INNKEEPER_IPC_KEYS": "dev", "INNKEEPER_GLOBAL_RATE": str(SIM_GLOBAL_RATE),
                "INNKEEPER_LOG_LEVEL": "WARNING", "INNKEEPER_LOG_FORMAT": "json",
                "INNKEEPER_METRICS_PORT_BASE": str(metrics_base), "INNKEEPER_IDENTIFY_WINDOW": "0.1",
                **(env or {})},
               f"http://127.0.0.1:{metrics_base}/metrics", log)
