"""``innkeeper demo`` as an operator runs it: everything up under supervisord, Ctrl-C takes it all down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from cluster.demo import demo_database_url
from db.migrate import database_name
from innkeeper.settings import PROJECT_ROOT
from tests.support import PG_ADMIN_DSN, as_from_a_terminal, read_port, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _tables(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
    finally:
        await conn.close()


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_demo_runs_everything_and_ctrl_c_stops_everything(tmp_path: Path, redis_url: str, redis_prefix: str,
                                                          database_url: str) -> None:
    run_dir = tmp_path / "run"
    # Every port is bound by the process that serves it: the simulator (--port 0, run/simulator.port),
    # the status service (run/status.port) and each cluster's /metrics (its heartbeat).
    env = {**os.environ, "INNKEEPER_RUN_DIR": str(run_dir), "INNKEEPER_REDIS_PREFIX": redis_prefix,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "INNKEEPER_STATUS_PORT": "0",
           "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_HEARTBEAT_INTERVAL": "0.5",
           "INNKEEPER_IDENTIFY_MARGIN": "0.15", "INNKEEPER_SYNC_COMMANDS": "false", "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "cluster.innkeeper_cli"]
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen([*cli, "demo", "--guilds", "300", "--shards", "4", "--clusters", "2",  # noqa: S603
                                 "--port", "0"], cwd=PROJECT_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=as_from_a_terminal)
    try:
        wait_for_sync(lambda: "press Ctrl-C" in log.read_text() or demo.poll() is not None, timeout=120,
                      message="the demo to be up")
        text = log.read_text()
        assert demo.poll() is None, text
        sim_port, status_port = read_port(run_dir / "simulator.port"), read_port(run_dir / "status.port")
        assert sim_port and status_port, text
        assert f"simulator: 300 guilds on http://127.0.0.1:{sim_port}" in text
        assert "all 4 shards READY" in text and f"status page: http://127.0.0.1:{status_port}/" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/healthz", timeout=10) as healthz:  # noqa: S310
            assert healthz.status == 200
        status = subprocess.run([*cli, "status", "--json"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        doc = json.loads(status.stdout)
        assert doc["healthy"]
        assert set(doc["supervisor"]) == {"0", "1"}  # cluster ids, each STARTING (< startsecs) or RUNNING
        assert set(doc["supervisor"].values()) <= {"STARTING", "RUNNING"}
        pids = [c["pid"] for c in doc["clusters"]]
        supervisord_pid = int((run_dir / "supervisord.pid").read_text())
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, log.read_text()
        assert "stopped" in log.read_text()
        # the demo ran on a database of its own (the dev key is its key), never the configured one
        assert asyncio.run(_tables(demo_database_url(database_url))) > 0
        assert asyncio.run(_tables(database_url)) == 0
        wait_for_sync(lambda: not any(_alive(p) for p in [*pids, supervisord_pid]), timeout=30,
                      message="every process gone")
        again = subprocess.run([*cli, "stop"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                               timeout=60, check=False)
        assert again.returncode == 0 and "not running" in again.stdout
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        subprocess.run([*cli, "stop"], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=90, check=False)
        asyncio.run(_drop(database_name(demo_database_url(database_url))))
