"""Real processes for end-to-end tests: the simulator and bot clusters as subprocesses.

Every process binds port 0 and reports the port it got (the simulator in its ``--port-file``, a
cluster in its heartbeat and log), is told its Redis URL, database and identify window by the test,
logs to a file under the test's tmp dir, and is killed (process group) at teardown, so nothing is left
running after a test and tests running in parallel cannot meet.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from innkeeper.settings import PROJECT_ROOT
from tests.support import DEV_CLI_ENV, IPC_KEYS, REDIS_TEST_URL, read_port, wait_for_sync

__all__ = ("Proc", "SimulatorProc", "start_simulator", "start_cluster", "cluster_env", "cli_env", "http_json",
           "bot_api", "metrics_port")

SIM_TOKEN = "e2e-token"


def http_json(method: str, url: str, body: Any = None, *, timeout: float = 30.0,
              headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """A small blocking JSON HTTP call (returns status and decoded body, also for 4xx/5xx)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def bot_api(sim: SimulatorProc, method: str, path: str, body: Any = None, *, attempts: int = 20) -> tuple[int, Any]:
    """A Discord REST call to ``sim`` with the bot's token, as a well-behaved client makes it.

    The test's reads count against the bot's limits in the simulator (as they would on Discord), so
    a busy bot can leave them a 429: the call waits the ``retry_after`` the simulator gave and asks
    again. Any other status is returned as it is.
    """
    for _ in range(attempts):
        status, reply = http_json(method, sim.url + path, body, headers={"Authorization": f"Bot {sim.token}"})
        if status != 429:
            return status, reply
        time.sleep(float(reply.get("retry_after", 0.1)) if isinstance(reply, dict) else 0.1)
    return status, reply


@dataclass
class Proc:
    """A subprocess in its own process group, with its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode


def spawn(name: str, args: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with log.open("ab") as fh:
        popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, *args], cwd=PROJECT_ROOT, stdout=fh, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True,
        )
    return Proc(name, popen, log)


@dataclass
class SimulatorProc(Proc):
    port: int = 0
    token: str = SIM_TOKEN
    #: The simulator's ``--identify-window``: bots pointed at it must pace their identifies to it.
    identify_window: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        status, body = http_json("GET", self.url + "/_sim/stats")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def world(self, limit: int = 100) -> dict[str, Any]:
        status, body = http_json("GET", f"{self.url}/_sim/world?limit={limit}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]


_SIMULATORS = itertools.count()


@contextmanager
def start_simulator(log_dir: Path, *, guilds: int = 50, shards: int = 1, max_concurrency: int = 1,
                    identify_window: float = 0.2, guild_sizes: str = "fixed",
                    extra_args: tuple[str, ...] = ()) -> Iterator[SimulatorProc]:
    """Run ``python -m simulator`` on a port it binds itself until the block exits.

    Guilds have ``fixed`` sizes by default (20 humans each), so tests can name members by position;
    ``realistic`` gives the heavy-tailed world of the demo and the benchmarks.
    """
    name = f"simulator-{next(_SIMULATORS)}"
    port_file = log_dir / f"{name}.port"
    args = ["-m", "simulator", "--port", "0", "--port-file", str(port_file), "--guilds", str(guilds),
            "--shards", str(shards), "--max-concurrency", str(max_concurrency),
            "--identify-window", str(identify_window), "--guild-sizes", guild_sizes, "--token", SIM_TOKEN,
            *extra_args]
    base = spawn(name, args, log_dir)
    sim = SimulatorProc(base.name, base.popen, base.log, identify_window=identify_window)
    try:
        def bound() -> int | None:
            assert sim.alive(), f"simulator exited:\n{sim.output()}"
            return read_port(port_file)

        sim.port = wait_for_sync(bound, timeout=30, message="the simulator to listen")
        assert http_json("GET", sim.url + "/_sim/stats", timeout=10)[0] == 200, sim.output()
        yield sim
    finally:
        sim.stop()


def cluster_env(sim: SimulatorProc, redis_prefix: str, *, redis_url: str, database_url: str,
                token: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a bot process pointed at ``sim``.

    Everything that could collide with another test is the test's own: the Redis URL and prefix,
    the database, and a metrics port the process binds itself (it reports it in its heartbeat).
    Identifies are paced to the simulator's window, not Discord's 5 s.
    """
    return {
        "DISCORD_TOKEN": token if token is not None else sim.token,
        "DISCORD_API_URL": sim.url,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "INNKEEPER_REDIS_PREFIX": redis_prefix,
        "INNKEEPER_IDENTIFY_WINDOW": str(sim.identify_window),
        "INNKEEPER_LOG_FORMAT": "json",
        "INNKEEPER_METRICS_PORT_BASE": "0",
        "INNKEEPER_IPC_KEYS": IPC_KEYS,
        **(extra or {}),
    }


def cli_env(*, database_url: str, redis_url: str = REDIS_TEST_URL, redis_prefix: str | None = None,
            **extra: str) -> dict[str, str]:
    """Environment for an ``innkeeper`` CLI run: the test's database, and a Redis URL and key prefix
    of the test's own (a fresh prefix unless given), never the defaults another test could share."""
    return {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "INNKEEPER_REDIS_PREFIX": redis_prefix or f"ikt-{uuid.uuid4().hex[:12]}", "INNKEEPER_LOG_FORMAT": "json",
            **DEV_CLI_ENV, **extra}


def start_cluster(log_dir: Path, env: Mapping[str, str], *, cluster: int = 0, shard_ids: str | None = None,
                  shard_count: int | None = None) -> Proc:
    """Start ``python -m shard`` (not waiting for anything)."""
    args = ["-m", "shard", "--cluster", str(cluster)]
    if shard_ids is not None:
        args += ["--shard-ids", shard_ids]
    if shard_count is not None:
        args += ["--shard-count", str(shard_count)]
    return spawn(f"cluster-{cluster}-{time.monotonic_ns()}", args, log_dir, env)


_METRICS_LINE = re.compile(r"metrics on http://[^\s/]+:(\d+)/metrics")


def metrics_port(proc: Proc) -> int | None:
    """The port of a cluster process's ``/metrics`` from its log (``INNKEEPER_METRICS_PORT_BASE=0``)."""
    found = _METRICS_LINE.findall(proc.output())
    return int(found[-1]) if found else None


def hard_stop_supervisord(run_dir: Path) -> None:
    """Last resort when ``innkeeper stop`` (the launcher) failed: SIGTERM supervisord, whose programs go with
    it, wait for it to exit, and SIGKILL it if it would not."""
    pidfile = run_dir / "supervisord.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip() or 0)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    with contextlib.suppress(AssertionError):
        wait_for_sync(gone, timeout=20, message=f"supervisord (pid {pid}) to exit")
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def stop_launcher(launcher: Any) -> None:
    """``innkeeper stop`` through ``launcher``; should it fail, end its supervisord the hard way and re-raise."""
    try:
        await launcher.stop()
    except Exception:
        hard_stop_supervisord(launcher.run_dir)
        raise
