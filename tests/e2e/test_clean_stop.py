"""A clean stop whatever happens to the terminal (issue 14, item 8).

``innkeeper demo | tee demo.log`` then Ctrl-C kills ``tee`` first: every later line of the demo
meets a broken pipe. A closed terminal sends SIGHUP and turns writes into errors. Here the CLI's
stdout and stderr go into a pipe whose reading end the test closes at once, then a signal comes:
the demo must stop every process it started (supervisord, the simulator, the status service, the
cluster), and ``innkeeper launch`` must leave the clusters to supervisord on purpose and say so in
``run/logs/innkeeper.log``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from cluster.demo import demo_database_url
from cluster.supervisor import Supervisor, SupervisorUnavailable
from db.migrate import database_name, migrate
from innkeeper.settings import PROJECT_ROOT
from tests.procs import start_simulator
from tests.support import IPC_KEYS, PG_ADMIN_DSN, as_from_a_terminal, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CLI = [sys.executable, "-m", "cluster.innkeeper_cli"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _cli_log(run_dir: Path) -> str:
    path = run_dir / "logs" / "innkeeper.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _supervised_pids(run_dir: Path) -> dict[str, int]:
    """supervisord's pid and every program's (``status``, ``simulator``, ``clusters:cluster-0``…) that runs."""
    sup = Supervisor(run_dir)
    pids = {"supervisord": int(sup.call_sync("getPID"))}
    for info in sup.call_sync("getAllProcessInfo"):
        if info["pid"]:
            pids[f"{info['group']}:{info['name']}"] = int(info["pid"])
    return pids


def _program_running(run_dir: Path, name: str) -> bool:
    try:
        return bool(Supervisor(run_dir).call_sync("getProcessInfo", name)["statename"] == "RUNNING")
    except SupervisorUnavailable:
        return False


def _start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The CLI with stdout and stderr into a pipe nobody reads any more: every write to them fails."""
    proc = subprocess.Popen([*CLI, *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.STDOUT, preexec_fn=as_from_a_terminal)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone, as `tee` after Ctrl-C: the CLI's next write gets EPIPE
    return proc


def _stop_everything(run_dir: Path, env: dict[str, str]) -> None:
    subprocess.run([*CLI, "stop"], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=120, check=False)


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def demo_env(tmp_path: Path, redis_url: str, redis_prefix: str, database_url: str) -> Iterator[dict[str, str]]:
    run_dir = tmp_path / "run"
    env = {**os.environ, "INNKEEPER_RUN_DIR": str(run_dir), "INNKEEPER_REDIS_PREFIX": redis_prefix,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "INNKEEPER_STATUS_PORT": "0",
           "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_HEARTBEAT_INTERVAL": "0.5",
           "INNKEEPER_SYNC_COMMANDS": "false", "INNKEEPER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    try:
        yield env
    finally:
        _stop_everything(run_dir, env)
        asyncio.run(_drop(database_name(demo_database_url(database_url))))


#: The smallest demo the command allows: one shard, one cluster, one identify bucket.
SMALL_DEMO = ["demo", "--guilds", "20", "--shards", "1", "--clusters", "1", "--max-concurrency", "1",
              "--identify-window", "0.1", "--port", "0"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_demo_stops_everything_with_its_output_gone(demo_env: dict[str, str], sig: signal.Signals) -> None:
    run_dir = Path(demo_env["INNKEEPER_RUN_DIR"])
    demo = _start_cli(SMALL_DEMO, demo_env)
    try:
        wait_for_sync(lambda: "press Ctrl-C" in _cli_log(run_dir) or demo.poll() is not None, timeout=120,
                      message="the demo to be up")
        assert demo.poll() is None, _cli_log(run_dir)
        pids = _supervised_pids(run_dir)
        assert {"supervisord", "status:status", "simulator:simulator", "clusters:cluster-0"} <= set(pids), pids
        demo.send_signal(sig)
        assert demo.wait(90) == 0, _cli_log(run_dir)  # not 1 (an exception) nor 120 (a failed flush at exit)
        log = _cli_log(run_dir)
        assert f"stopping the clusters, the simulator and supervisord ({sig.name})" in log
        assert log.rstrip().endswith("stopped"), log
        wait_for_sync(lambda: not [name for name, pid in pids.items() if _alive(pid)], timeout=30,
                      message=f"every process the demo started gone: {pids}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


def test_demo_stops_what_it_started_when_the_terminal_closes_during_start_up(demo_env: dict[str, str]) -> None:
    """SIGHUP while the cluster is still starting: start-up stops where it is, and all of it is stopped."""
    run_dir = Path(demo_env["INNKEEPER_RUN_DIR"])
    demo = _start_cli(SMALL_DEMO, demo_env)
    try:
        wait_for_sync(lambda: _program_running(run_dir, "simulator") or demo.poll() is not None, timeout=60,
                      message="supervisord running the simulator")
        assert demo.poll() is None, _cli_log(run_dir)
        pids = _supervised_pids(run_dir)
        demo.send_signal(signal.SIGHUP)
        assert demo.wait(90) == 0, _cli_log(run_dir)
        assert "(SIGHUP)" in _cli_log(run_dir)
        wait_for_sync(lambda: not [name for name, pid in pids.items() if _alive(pid)], timeout=30,
                      message=f"every process the demo started gone: {pids}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_launch_interrupted_leaves_the_clusters_to_supervisord_and_says_so(
        tmp_path: Path, redis_url: str, redis_prefix: str, database_url: str, sig: signal.Signals) -> None:
    """``innkeeper launch`` hands the clusters over on purpose: interrupted while it waits, it says so and exits."""
    run_dir = tmp_path / "run"
    asyncio.run(migrate(database_url))
    with start_simulator(tmp_path / "sim", guilds=10, shards=1, identify_window=0.1) as sim:
        env = {**os.environ, "INNKEEPER_RUN_DIR": str(run_dir), "INNKEEPER_REDIS_PREFIX": redis_prefix,
               "REDIS_URL": redis_url, "DATABASE_URL": database_url, "DISCORD_TOKEN": sim.token,
               "DISCORD_API_URL": sim.url, "INNKEEPER_IPC_KEYS": IPC_KEYS, "INNKEEPER_STATUS_PORT": "0",
               "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_IDENTIFY_WINDOW": "0.1",
               "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_SYNC_COMMANDS": "false",
               # the budget guard holds the shard back: the launch is still waiting when the signal comes
               "INNKEEPER_IDENTIFY_RESERVE": "1000000", "INNKEEPER_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        launch = _start_cli(["launch", "--shards", "1", "--clusters", "1"], env)
        try:
            wait_for_sync(lambda: _program_running(run_dir, "clusters:cluster-0") or launch.poll() is not None,
                          timeout=90, message="the cluster running under supervisord")
            assert launch.poll() is None, _cli_log(run_dir)
            pids = _supervised_pids(run_dir)
            launch.send_signal(sig)
            assert launch.wait(30) == 128 + sig, _cli_log(run_dir)
            log = _cli_log(run_dir)
            assert (f"{sig.name}: launch interrupted (stopped waiting at 0/1 shards READY" in log
                    and f"the clusters keep starting under supervisord (pid {pids['supervisord']})" in log
                    and "`innkeeper stop` stops them" in log), log
            assert all(_alive(pid) for pid in pids.values()), pids  # left running, on purpose
            _stop_everything(run_dir, env)
            wait_for_sync(lambda: not [name for name, pid in pids.items() if _alive(pid)], timeout=30,
                          message="`innkeeper stop` stopping what the launch left")
        finally:
            if launch.poll() is None:
                launch.kill()
                launch.wait(10)
            _stop_everything(run_dir, env)
