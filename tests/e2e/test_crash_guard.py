"""The crash-loop guard with real supervisord (issue 14, item 10).

A cluster killed (``kill -9``) each time it is back READY, after supervisord's ``startsecs``, is a
late death: the guard (``[eventlistener:crashguard]``) starts it again at once, then after 1, 2, 4 … s and, at
the cap, leaves it down with the reason in ``/status.json``, ``/healthz``, ``/metrics`` and
``innkeeper status``. An operator's restart starts a fresh history.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster.launcher import Launcher
from cluster.ops import format_status
from cluster.render import Policy
from cluster.state import read_status
from cluster.status import read_status_port
from db.migrate import migrate
from innkeeper.settings import Settings
from ipc.identify import store_budget
from tests.procs import SimulatorProc, start_simulator
from tests.support import IPC_KEYS, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CAP, BASE = 5, 1.0
CLUSTER = "clusters:cluster-0"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    with start_simulator(tmp_path / "sim", guilds=10, shards=1, identify_window=0.1) as proc:
        yield proc


@pytest.fixture
def extra_env() -> dict[str, str]:
    """Settings a test adds (it parametrizes this name)."""
    return {}


@pytest.fixture
async def launcher(sim: SimulatorProc, tmp_path: Path, redis_url: str, redis_prefix: str,
                   database_url: str, extra_env: dict[str, str]) -> AsyncIterator[Launcher]:
    await migrate(database_url)
    settings = Settings.from_env({
        "DISCORD_TOKEN": sim.token, "DISCORD_API_URL": sim.url, "INNKEEPER_REDIS_PREFIX": redis_prefix,
        "REDIS_URL": redis_url, "DATABASE_URL": database_url, "INNKEEPER_RUN_DIR": str(tmp_path / "run"),
        "INNKEEPER_STATUS_PORT": "0", "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_IDENTIFY_WINDOW": "0.1",
        "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_HEARTBEAT_TTL": "5", "INNKEEPER_LOG_FORMAT": "json",
        "INNKEEPER_SYNC_COMMANDS": "false", "INNKEEPER_IPC_KEYS": IPC_KEYS,
        "INNKEEPER_CRASH_LOOP_MAX": str(CAP), "INNKEEPER_CRASH_LOOP_WINDOW": "600",
        "INNKEEPER_CRASH_BACKOFF_BASE": str(BASE), "INNKEEPER_CRASH_BACKOFF_MAX": "60", **extra_env,
    })
    lines: list[str] = []
    # startsecs 1: a process RUNNING for a second has outlived supervisord's own early-death cap
    launcher = Launcher(settings, out=lines.append, policy=Policy(startsecs=1))
    try:
        yield launcher
    finally:
        await launcher.stop()


async def _info(launcher: Launcher) -> dict[str, Any]:
    info: dict[str, Any] = await launcher.supervisor.process(CLUSTER)
    return info


async def _doc(launcher: Launcher) -> dict[str, Any]:
    async with launcher.redis() as client:
        _, doc = await read_status(client, launcher.keys, stale_after_s=launcher.stale_after_s)
    return dict(doc)


async def _ready_in(launcher: Launcher, pid: int) -> bool:
    """Every shard READY in a heartbeat of process ``pid``, and supervisord says it is RUNNING (past startsecs)."""
    info = await _info(launcher)
    cluster = (await _doc(launcher))["clusters"][0]
    return bool(info["statename"] == "RUNNING" and info["pid"] == pid and cluster["pid"] == pid
                and all(s["state"] == "READY" for s in cluster["shards"]))


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, session.get(url) as r:
        return r.status, await r.text()


async def test_late_deaths_are_restarted_with_growing_delays_then_left_down_with_the_reason(
        launcher: Launcher) -> None:
    await launcher.launch(shards=1, clusters=1, timeout=120)
    pid = int((await _info(launcher))["pid"])
    delays: list[float] = []
    for crash in range(1, CAP + 1):
        await wait_for(lambda pid=pid: _ready_in(launcher, pid), timeout=60, message=f"pid {pid} READY and RUNNING")
        killed_at = (await _info(launcher))["now"]  # supervisord's clock, the one its "start" uses
        os.kill(pid, signal.SIGKILL)
        if crash == CAP:
            break

        async def restarted(old: int = pid) -> dict[str, Any] | None:
            info = await _info(launcher)
            return info if info["pid"] not in (0, old) else None

        info = await wait_for(restarted, timeout=60, message=f"the restart after crash {crash}")
        delays.append(info["start"] - killed_at)
        pid = int(info["pid"])

        async def recorded(crash: int = crash) -> dict[str, Any] | None:
            # the guard counts the restart once supervisord says RUNNING (past startsecs), a moment after the spawn
            guard = (await _doc(launcher))["clusters"][0]["crash_guard"]
            return guard if guard is not None and guard["restarts"] == crash else None

        guard = await wait_for(recorded, timeout=30, message=f"the guard's record of restart {crash}")
        assert guard["crashes"] == crash and guard["restarts"] == crash, guard
    # supervisord's clock has whole seconds: each delay is at least the guard's, less than a second late
    # plus the time the guard took to hear the death
    for n, delay in enumerate(delays, start=1):
        expected = 0.0 if n == 1 else BASE * 2 ** (n - 2)
        assert expected - 1 <= delay <= expected + 3, delays
    assert delays == sorted(delays) and delays[-1] - delays[0] >= 2, delays

    async def stopped() -> dict[str, Any] | None:
        guard = (await _doc(launcher))["clusters"][0]["crash_guard"]
        return guard if guard and guard["state"] == "stopped" else None

    guard = await wait_for(stopped, timeout=30, message="the guard to give up")
    reason = (f"crash loop: {CAP} crashes in 10 min; last killed by a signal; stopped "
              "(`innkeeper restart 0` starts it again)")
    assert guard["reason"] == reason and guard["last_exit"] == -1
    assert (await _info(launcher))["statename"] == "EXITED"  # left down by the guard

    # every place an operator looks says why
    port = await wait_for(lambda: read_status_port(launcher.run_dir), timeout=20, message="the status port")
    base = f"http://127.0.0.1:{port}"
    status, body = await _get(f"{base}/status.json")
    assert status == 200 and reason in body
    status, body = await _get(f"{base}/healthz")
    assert status == 503 and reason in body, body
    status, body = await _get(f"{base}/metrics")
    assert 'innkeeper_status_cluster_crash_stopped{cluster="0"} 1.0' in body
    assert f'innkeeper_status_cluster_crashes{{cluster="0"}} {CAP}.0' in body
    assert f'innkeeper_status_cluster_crash_restarts{{cluster="0"}} {CAP - 1}.0' in body
    assert f"! {reason}" in format_status(await _doc(launcher), {0: "EXITED"})  # type: ignore[arg-type]
    guard_log = (launcher.run_dir / "logs" / "crash-guard.log").read_text()
    assert reason in guard_log

    # the operator's restart: the cluster runs again, with a fresh history
    await launcher.restart(cluster=0)
    assert (await _doc(launcher))["clusters"][0]["crash_guard"] is None


async def test_an_expected_exit_is_no_crash(launcher: Launcher) -> None:
    """``innkeeper stop``-like clean stops and the fatal exit 78 are not the guard's: nothing restarts them."""
    await launcher.launch(shards=1, clusters=1, timeout=120)
    pid = int((await _info(launcher))["pid"])
    await wait_for(lambda: _ready_in(launcher, pid), timeout=60, message="READY and RUNNING")
    os.kill(pid, signal.SIGTERM)  # a clean shutdown: exit 0

    async def exited() -> bool:
        return bool((await _info(launcher))["statename"] == "EXITED")

    await wait_for(exited, timeout=60, message="the clean exit")
    info = await _info(launcher)
    assert info["exitstatus"] == 0
    guard_log = launcher.run_dir / "logs" / "crash-guard.log"
    assert "cluster-0:" not in (guard_log.read_text() if guard_log.exists() else "")
    assert (await _doc(launcher))["clusters"][0]["crash_guard"] is None


# With its sessions, a restarted cluster RESUMEs and spends nothing anyway: here it must identify.
@pytest.mark.parametrize("extra_env", [{"INNKEEPER_RESUME_ON_RESTART": "false"}])
async def test_a_restart_held_back_by_the_identify_reserve_spends_nothing_and_is_no_crash(
        launcher: Launcher, sim: SimulatorProc) -> None:
    """The guard's restart meets a budget at the reserve: the cluster waits BLOCKED, RUNNING, without a crash."""
    await launcher.launch(shards=1, clusters=1, timeout=120)
    pid = int((await _info(launcher))["pid"])
    await wait_for(lambda: _ready_in(launcher, pid), timeout=60, message="READY and RUNNING")
    async with launcher.redis() as client:  # Discord says: 5 identifies left today (the reserve is 10)
        await store_budget(client, launcher.keys, {"total": 1000, "remaining": 5, "reset_after": 3_600_000,
                                                   "max_concurrency": 1})
    identifies = sim.stats()["identifies"]
    os.kill(pid, signal.SIGKILL)

    async def blocked() -> dict[str, Any] | None:
        info = await _info(launcher)
        cluster = (await _doc(launcher))["clusters"][0]
        held = info["statename"] == "RUNNING" and cluster["pid"] == info["pid"] != pid \
            and cluster["identify_blocked_reason"]
        # the guard records the restart once supervisord says RUNNING: that write may come a moment later
        recorded = (cluster["crash_guard"] or {}).get("state") == "running"
        return cluster if held and recorded else None

    cluster = await wait_for(blocked, timeout=60, message="the restarted cluster held back by the budget guard")
    assert cluster["state"] == "BLOCKED"
    assert "identify budget exhausted: 5 left (reserve 10)" in cluster["identify_blocked_reason"]
    guard = cluster["crash_guard"]
    assert guard is not None and (guard["state"], guard["crashes"], guard["restarts"]) == ("running", 1, 1)
    assert f"restarted after crash 1 of {CAP} in 10 min" in guard["reason"]
    assert sim.stats()["identifies"] == identifies  # the restart spent none of the reserve
    doc = await _doc(launcher)
    assert f"! {guard['reason']}" in format_status(doc, {0: "RUNNING"})  # type: ignore[arg-type]
