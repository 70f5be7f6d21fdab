"""The watchdog in a real cluster process: a shard whose socket goes silent (the simulator's ``silent``
fault: open, but no dispatch and no heartbeat ACK) is detected within ``INNKEEPER_ZOMBIE_AFTER`` and
brought back with RESUME, spending no identify; commands in its guilds are answered again.

discord.py's own heartbeat timeout would also recover the shard, but only after 60 s. The test allows
far less, and checks the watchdog's own counter: if the private field the watchdog reads
(``KeepAliveHandler._last_recv``) moved in a discord.py release, the watchdog would never fire and
this test fails.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from ipc.keys import Keys
from tests.e2e.commands import load_world, prefix
from tests.procs import Proc, SimulatorProc, cluster_env, http_json, metrics_port, start_cluster, start_simulator
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ZOMBIE_AFTER_S = 3.0


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    """Heartbeats every second (Discord allows 120 payloads a minute): a healthy shard receives a frame far
    more often than ZOMBIE_AFTER_S."""
    with start_simulator(tmp_path / "sim", guilds=50, shards=2, identify_window=0.2,
                         extra_args=("--message-limit", "100", "--heartbeat-interval-ms", "1000")) as proc:
        yield proc


async def _metrics(proc: Proc) -> str:
    port = metrics_port(proc)
    if port is None:
        return ""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                session.get(f"http://127.0.0.1:{port}/metrics") as r:
            return await r.text()
    except aiohttp.ClientError:
        return ""


def _value(text: str, sample: str) -> float:
    found = re.findall(rf"^{re.escape(sample)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found[0]) if found else 0.0


async def test_a_silent_shard_is_resumed_by_the_watchdog(sim: SimulatorProc, tmp_path: Path, redis_url: str,
                                                         redis_prefix: str, migrated_db: str) -> None:
    env = cluster_env(sim, redis_prefix, redis_url=redis_url, database_url=migrated_db, extra={
        "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_SYNC_COMMANDS": "false",
        "INNKEEPER_ZOMBIE_AFTER": str(ZOMBIE_AFTER_S)})
    proc = start_cluster(tmp_path / "logs", env, shard_ids="0,1", shard_count=2)
    try:
        world = await load_world(sim)
        client = aioredis.from_url(redis_url)
        keys = Keys(redis_prefix)
        try:
            async def ready() -> bool:  # each shard saves its guilds' snapshots once it has them all
                assert proc.alive, proc.output()
                return bool(await client.exists(keys.shard_snapshot_index(0), keys.shard_snapshot_index(1)) == 2)
            await wait_for(ready, timeout=60, message="both shards ready")
        finally:
            await client.aclose()
        assert (await prefix(sim, world, world.members[0], "!ping"))["content"].startswith("Pong!")
        text = await _metrics(proc)
        assert _value(text, "innkeeper_watchdog_blind") == 0, "the watchdog cannot read discord.py's receive time"
        before = sim.stats()
        shard = str(world.shard_id)
        status, body = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/faults",
                                               {"kind": "silent", "shard_id": world.shard_id})
        assert status == 200, body
        silenced = time.monotonic()

        def resumed() -> bool:
            return sim.stats()["shards"][shard]["resumes"] > before["shards"][shard]["resumes"]
        await wait_for(resumed, timeout=ZOMBIE_AFTER_S * 6, message="the silent shard RESUMEd")
        took = time.monotonic() - silenced
        text = await _metrics(proc)
        assert _value(text, 'innkeeper_watchdog_zombies_total{action="resume"}') >= 1, \
            "recovered, but not by the watchdog (discord.py's own heartbeat timeout?)"
        after = sim.stats()
        assert after["identifies"] == before["identifies"]  # a RESUME, no identify
        assert (await prefix(sim, world, world.members[1], "!ping"))["content"].startswith("Pong!")
        assert proc.alive
        print(f"silent shard detected and resumed in {took:.1f} s (zombie_after {ZOMBIE_AFTER_S} s)")
    finally:
        proc.stop(signal.SIGTERM)
