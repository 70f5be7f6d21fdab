"""A cluster process killed with ``kill -9`` comes back with RESUME: 0 identifies, its guilds rebuilt,
and the commands Discord replays that the dead process had already started are not run twice.

Real processes: the simulator, ``python -m shard`` (twice), Redis and PostgreSQL. The session save
interval is stretched to 4 s so that the saved sequence is certainly older than the command the test
sends: the RESUME then replays that command, and only the replay guard stands between it and a second
answer. The test checks that the replay happened (the simulator's count), so it cannot pass without
exercising the guard.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from ipc.keys import Keys
from tests.e2e.commands import channel_messages, load_world, prefix
from tests.procs import Proc, SimulatorProc, cluster_env, metrics_port, start_cluster
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SAVE_INTERVAL_S = 4.0


@pytest.fixture
async def keys_and_redis(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Keys, aioredis.Redis]]:
    client = aioredis.from_url(redis_url)
    yield Keys(redis_prefix), client
    await client.aclose()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL)


async def _metric(proc: Proc, name: str) -> float:
    port = metrics_port(proc)
    if port is None:
        return -1.0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return -1.0
    found = re.findall(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found[0]) if found else 0.0


async def test_kill_9_resumes_and_a_replayed_command_is_not_run_twice(
        sim: SimulatorProc, tmp_path: Path, redis_url: str, redis_prefix: str, migrated_db: str,
        keys_and_redis: tuple[Keys, aioredis.Redis], procs: list[Proc]) -> None:
    keys, redis = keys_and_redis
    env = cluster_env(sim, redis_prefix, redis_url=redis_url, database_url=migrated_db, extra={
        "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_SYNC_COMMANDS": "false",
        "INNKEEPER_SESSION_SAVE_INTERVAL": str(SAVE_INTERVAL_S)})
    world = await load_world(sim)
    shard = world.shard_id
    first = start_cluster(tmp_path / "logs", env, shard_ids="0,1", shard_count=2)
    procs.append(first)

    async def snapshots_and_session() -> bool:
        return bool(await redis.exists(keys.shard_snapshot_index(0), keys.shard_snapshot_index(1)) == 2
                    and await redis.hget(keys.session(shard), "sequence"))
    await wait_for(snapshots_and_session, timeout=60, message="guild snapshots and a saved session")
    assert (await prefix(sim, world, world.members[0], "!ping"))["content"].startswith("Pong!")

    # Right after a periodic save: the command below is read after it, and the kill comes before the next.
    saved_at = await redis.hget(keys.session(shard), "saved_at")

    async def saved_again() -> bool:
        return await redis.hget(keys.session(shard), "saved_at") != saved_at
    await wait_for(saved_again, timeout=SAVE_INTERVAL_S * 3, message="the next periodic session save")
    save_seen = time.monotonic()
    assert (await prefix(sim, world, world.members[1], "!ping"))["content"].startswith("Pong!")
    first.stop(signal.SIGKILL)
    assert time.monotonic() - save_seen < SAVE_INTERVAL_S, "the kill came after the next save: nothing to replay"
    before = sim.stats()

    second = start_cluster(tmp_path / "logs", env, shard_ids="0,1", shard_count=2)
    procs.append(second)

    def resumed() -> bool:
        shards = sim.stats()["shards"]
        return all(shards[str(s)]["resumes"] == before["shards"][str(s)]["resumes"] + 1 for s in (0, 1))
    await wait_for(resumed, timeout=60, message="both shards RESUMEd by the new process")
    after = sim.stats()
    assert after["identifies"] == before["identifies"] == 2  # the restart spent no identify
    assert after["shards"][str(shard)]["replayed"] > before["shards"][str(shard)]["replayed"], \
        "the RESUME replayed nothing: the test did not exercise the replay"

    async def duplicate_skipped() -> bool:
        return await _metric(second, 'innkeeper_replayed_duplicates_total{event="MESSAGE_CREATE"}') >= 1
    await wait_for(duplicate_skipped, timeout=20, message="the replayed !ping skipped as a duplicate")
    # The rebuilt cache serves commands at once, in the guild it never saw a GUILD_CREATE for.
    assert (await prefix(sim, world, world.members[0], "!ping"))["content"].startswith("Pong!")
    # three !ping sent, three answers: the replayed one was not answered again
    pongs = [m for m in await channel_messages(sim, world.channel_id, 100)
             if m["author"].get("bot") and m["content"].startswith("Pong!")]
    assert len(pongs) == 3, [m["content"] for m in pongs]
    assert second.alive and "Traceback" not in second.output()
    await asyncio.sleep(0)
