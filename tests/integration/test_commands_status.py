"""``/status`` data against real Redis: over the IPC bus with a missing cluster, over heartbeats, and alone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from ipc.bus import Bus
from ipc.heartbeat import ClusterBeat, write_heartbeat
from ipc.keys import Keys
from ipc.registry import HandlerRegistry
from shard.bus_handlers import register_cluster_handlers
from shard.status_report import STATUS_ACTION, StatusReporter, local_view, render_status
from tests.support import ReservedPort, ipc_signer

pytestmark = pytest.mark.integration


class FakeShard:
    def __init__(self, latency: float) -> None:
        self.latency = latency

    def is_closed(self) -> bool:
        return False


def fake_bot(cluster_id: int, redis: Any, keys: Keys, shard_ids: list[int], guilds: int) -> Any:
    return SimpleNamespace(
        cluster_id=cluster_id, redis=redis, keys=keys, bus=None,
        shards={sid: FakeShard(0.042) for sid in shard_ids},
        guilds=[SimpleNamespace(shard_id=shard_ids[i % len(shard_ids)]) for i in range(guilds)],
        is_ready=lambda: True,
    )


def reporter(bot: Any) -> StatusReporter:
    """What ``shard/assembly.py`` builds for a cluster (this fake one has no shard tracker)."""
    return StatusReporter(bus=bot.bus, redis=bot.redis, keys=bot.keys,
                          local=lambda: local_view(bot, None, bot.cluster_id))


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_status_over_the_bus_names_the_cluster_that_did_not_answer(redis: aioredis.Redis,
                                                                        redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    bots = [fake_bot(0, redis, keys, [0, 1], 10), fake_bot(1, redis, keys, [2, 3], 7)]
    buses = []
    for bot in bots:
        bot.bus = Bus(redis, keys, bot.cluster_id, signer=ipc_signer(), registry=HandlerRegistry())
        register_cluster_handlers(bot.bus.registry, bot,
                                  local_status=lambda b=bot: local_view(b, None, b.cluster_id))
        assert STATUS_ACTION in bot.bus.registry
        await bot.bus.start()
        buses.append(bot.bus)
    try:
        for cid in (0, 1, 2):  # cluster 2 has a heartbeat key but no bus: it was just killed
            await redis.set(keys.heartbeat(cid), b"alive", px=30_000)
        report = await reporter(bots[0]).gather(timeout=1.0)
        assert report.source == "ipc"
        assert [c.id for c in report.clusters] == [0, 1] and report.missing == [2]
        assert report.guilds == 17 and report.shard_count == 4 and not report.complete
        text = render_status(report, this_cluster=0)
        assert "cluster 0 (this one): READY, shards 2/2 ready [0, 1], 10 guilds, latency 42 ms" in text
        assert "cluster 2: did not answer in time" in text and "Partial result" in text
    finally:
        for bus in buses:
            await bus.stop()


async def test_status_falls_back_to_heartbeats_then_to_this_cluster(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    now = time.time()
    for cid, shards in ((0, [0, 1]), (1, [2, 3])):
        beat: ClusterBeat = {
            "v": 1, "cluster_id": cid, "host": "h", "pid": 100 + cid, "started_at": now - 60, "written_at": now,
            "state": "READY", "rss_bytes": 1, "events_per_s": 0.0, "metrics_port": None,
            "identify_blocked_reason": None,
            "shards": [{"id": s, "state": "READY", "latency_ms": 40.0, "guilds": 5, "last_event_age_s": 0.1,
                        "identified_at": now, "ready_at": now, "identifies": 1, "resumes": 0, "reconnects": 0}
                       for s in shards],
        }
        await write_heartbeat(redis, keys, beat, 30)
    report = await reporter(fake_bot(0, redis, keys, [0, 1], 10)).gather()
    assert report.source == "heartbeats" and [c.id for c in report.clusters] == [0, 1] and report.guilds == 20
    assert "cluster heartbeats (the IPC bus is not up)" in render_status(report, this_cluster=0)

    with ReservedPort() as closed:  # held and never listening: nothing answers there
        dead = aioredis.from_url(f"redis://127.0.0.1:{closed.port}/0", socket_connect_timeout=0.5)
        try:
            alone = await reporter(fake_bot(3, dead, keys, [6, 7], 4)).gather()
        finally:
            await dead.aclose()
    assert alone.source == "local" and [c.id for c in alone.clusters] == [3] and alone.guilds == 4
    assert "this cluster only (Redis is unreachable)" in render_status(alone, this_cluster=3)
