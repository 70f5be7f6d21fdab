"""A cluster that cannot recover gives up, supervisord (through the crash guard) starts a new process,
and once the gateway is back the new process RESUMEs: no identify spent, nothing lost (issue 14 item 11).

The simulator's ``outage`` fault closes every socket and refuses websocket upgrades for a while, as a
gateway going away would. With ``INNKEEPER_ZOMBIE_AFTER`` 1 s, a cluster none of whose shards is READY
for 3 s exits 1 (E6002); the crash guard starts it again; the new process keeps trying its RESUMEs
while the saved sessions may live, and resumes them when the outage ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.launcher import Launcher
from cluster.render import Policy
from cluster.state import read_status
from db.migrate import migrate
from innkeeper.settings import Settings
from tests.procs import SimulatorProc, http_json, start_simulator
from tests.support import IPC_KEYS, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

OUTAGE_S = 6.0
CLUSTER = "clusters:cluster-0"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    with start_simulator(tmp_path / "sim", guilds=20, shards=2, identify_window=0.1,
                         extra_args=("--heartbeat-interval-ms", "1000")) as proc:
        yield proc


@pytest.fixture
async def launcher(sim: SimulatorProc, tmp_path: Path, redis_url: str, redis_prefix: str,
                   database_url: str) -> AsyncIterator[Launcher]:
    await migrate(database_url)
    settings = Settings.from_env({
        "DISCORD_TOKEN": sim.token, "DISCORD_API_URL": sim.url, "INNKEEPER_REDIS_PREFIX": redis_prefix,
        "REDIS_URL": redis_url, "DATABASE_URL": database_url, "INNKEEPER_RUN_DIR": str(tmp_path / "run"),
        "INNKEEPER_STATUS_PORT": "0", "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_IDENTIFY_WINDOW": "0.1",
        "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_HEARTBEAT_TTL": "5", "INNKEEPER_LOG_FORMAT": "json",
        "INNKEEPER_SYNC_COMMANDS": "false", "INNKEEPER_IPC_KEYS": IPC_KEYS, "INNKEEPER_ZOMBIE_AFTER": "1",
        "INNKEEPER_CRASH_LOOP_MAX": "20",
    })
    launcher = Launcher(settings, out=lambda _line: None, policy=Policy(startsecs=1))
    try:
        yield launcher
    finally:
        await launcher.stop()


async def _doc(launcher: Launcher) -> dict[str, Any]:
    async with launcher.redis() as client:
        _, doc = await read_status(client, launcher.keys, stale_after_s=launcher.stale_after_s)
    return dict(doc)


async def test_a_cluster_that_cannot_recover_exits_and_its_successor_resumes(
        launcher: Launcher, sim: SimulatorProc) -> None:
    await launcher.launch(shards=2, clusters=1, timeout=120)
    first = int((await launcher.supervisor.process(CLUSTER))["pid"])

    async def snapshots_saved() -> bool:  # each shard saves its guilds once it has them all
        async with launcher.redis() as client:
            return bool(await client.exists(launcher.keys.shard_snapshot_index(0),
                                            launcher.keys.shard_snapshot_index(1)) == 2)
    await wait_for(snapshots_saved, timeout=30, message="both shards' guild snapshots")
    before = sim.stats()
    status, body = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/faults",
                                           {"kind": "outage", "seconds": OUTAGE_S})
    assert status == 200, body

    async def gave_up() -> dict[str, Any] | None:
        guard = (await _doc(launcher))["clusters"][0]["crash_guard"]
        return guard if guard and guard["crashes"] >= 1 else None
    guard = await wait_for(gave_up, timeout=30, message="the cluster giving up and the crash guard noticing")
    assert guard["last_exit"] == 1, guard  # it exited on purpose (E6002), not killed
    log = (launcher.run_dir / "logs" / "cluster-0.log").read_text()
    assert "E6002" in log and "no shard READY" in log

    async def back() -> bool:
        info = await launcher.supervisor.process(CLUSTER)
        cluster = (await _doc(launcher))["clusters"][0]
        return bool(info["statename"] == "RUNNING" and info["pid"] not in (0, first) and cluster["pid"] == info["pid"]
                    and all(s["state"] == "READY" for s in cluster["shards"]))
    await wait_for(back, timeout=60, message="a new process READY once the gateway is back")
    after = sim.stats()
    assert after["outage_refusals"] > 0  # the outage really kept the cluster out
    assert after["identifies"] == before["identifies"]  # the successor RESUMEd: no identify spent
    assert sum(after["shards"][s]["resumes"] - before["shards"][s]["resumes"] for s in ("0", "1")) >= 2
    assert after["lost"] == 0
