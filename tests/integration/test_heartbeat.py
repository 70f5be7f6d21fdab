"""Heartbeat records against a real Redis: write, read, expire, skip garbage."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from ipc.heartbeat import ClusterBeat, read_heartbeats, write_heartbeat
from ipc.keys import Keys
from tests.support import wait_for

pytestmark = pytest.mark.integration


def beat(cluster_id: int, state: str = "READY") -> ClusterBeat:
    return {
        "v": 1, "cluster_id": cluster_id, "host": "h", "pid": 100 + cluster_id, "started_at": time.time() - 5,
        "written_at": time.time(), "state": state, "rss_bytes": 1 << 20, "events_per_s": 1.5,
        "metrics_port": 9100 + cluster_id, "identify_blocked_reason": None,
        "shards": [{"id": cluster_id, "state": state, "latency_ms": 12.5, "guilds": 3, "last_event_age_s": 0.5,
                    "identified_at": time.time(), "ready_at": time.time(), "identifies": 1, "resumes": 0,
                    "reconnects": 0}],
    }


async def test_write_read_and_expire(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    written = {0: beat(0), 1: beat(1, "IDENTIFYING")}
    for record in written.values():
        await write_heartbeat(redis, keys, record, ttl_s=30)
    got = await read_heartbeats(redis, keys)
    assert got == written  # every field round-trips, the times and the shards included
    assert got[1]["shards"][0]["latency_ms"] == 12.5 and got[1]["state"] == "IDENTIFYING"
    assert await read_heartbeats(redis, keys, [1, 2]) == {1: written[1]}
    # the TTL applies: a short one makes the record expire, and the other stays
    await write_heartbeat(redis, keys, written[1], ttl_s=0.3)
    assert 0 < await redis.pttl(keys.heartbeat(1)) <= 300

    async def expired() -> bool:
        return list(await read_heartbeats(redis, keys)) == [0]
    await wait_for(expired, timeout=5, message="cluster 1's heartbeat to expire")
    assert await read_heartbeats(redis, keys) == {0: written[0]}


async def test_garbage_is_skipped(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    await redis.set(keys.heartbeat(5), b"\xc1 not msgpack")
    await redis.set(keys.heartbeat(6), b"\x81\xa1v\x01")  # {"v": 1}: fields missing
    await write_heartbeat(redis, keys, beat(7), ttl_s=30)
    assert list(await read_heartbeats(redis, keys)) == [7]
