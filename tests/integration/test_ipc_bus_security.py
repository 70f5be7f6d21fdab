"""The bus against someone who can publish on Redis: forged, unsigned, stale, oversized, replayed and
too many frames are dropped and counted, and the event loop (heartbeats) keeps its pace meanwhile."""

from __future__ import annotations

import asyncio
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from innkeeper.errors import ErrorCode, IPCError
from innkeeper.settings import PROJECT_ROOT
from ipc.bus import Bus
from ipc.cache import INVALIDATE_EVENT, SharedCache
from ipc.frames import MAX_FRAME_BYTES
from ipc.keys import Keys
from ipc.messages import MAX_MESSAGE_BYTES, Event, Request, encode
from ipc.registry import HandlerRegistry
from ipc.signing import FrameSigner
from tests.support import INNKEEPER_CLI, ipc_signer, wait_for

pytestmark = pytest.mark.integration

#: A signer holding a key the clusters do not have, under the same id (a forger guessing the id).
FORGER = FrameSigner([("dev", b"a key the clusters do not hold!!")])
STRANGER = FrameSigner([("elsewhere", b"another deployment's key, 32 by.")])


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, client_name=redis_prefix)
    yield client
    await client.aclose()


def _registry(calls: list[str] | None = None, release: asyncio.Event | None = None) -> HandlerRegistry:
    registry = HandlerRegistry(default_timeout=30.0)

    @registry.handler("whoami")
    async def whoami(args: dict[str, Any]) -> str:
        if calls is not None:
            calls.append("whoami")
        return "cluster-0"

    @registry.handler("hold")
    async def hold(args: dict[str, Any]) -> str:
        if calls is not None:
            calls.append("hold")
        assert release is not None
        await release.wait()
        return "done"

    return registry


def _crafted_body() -> bytes:
    """A 1 MiB message of a million empty lists: 1.3 s and 130 MB to decode before the fix."""
    head = msgpack.packb({"kind": "request", "v": 1, "id": "x", "action": "whoami", "sender": "cli-x",
                          "reply_to": "p:bus:to:cli-x", "args": {"a": None}})
    n = MAX_MESSAGE_BYTES - len(head) - 16
    body = head.replace(b"\xa1a\xc0", b"\xa1a\xdd" + struct.pack(">I", n) + b"\x90" * n)
    assert len(body) <= MAX_MESSAGE_BYTES
    return body


class _Pace:
    """A heartbeat writer (one Redis write every ``interval``) and the event loop's worst lag."""

    def __init__(self, redis: aioredis.Redis, key: str, interval: float = 0.05) -> None:
        self.redis, self.key, self.interval = redis, key, interval
        self.writes: list[float] = []
        self.max_lag = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _beat(self) -> None:
        while not self._stop.is_set():
            await self.redis.set(self.key, b"alive", px=5000)
            self.writes.append(time.monotonic())
            await asyncio.sleep(self.interval)

    async def _lag(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            await asyncio.sleep(0.01)
            self.max_lag = max(self.max_lag, time.monotonic() - start - 0.01)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._lag())]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def max_gap(self) -> float:
        return max((b - a for a, b in zip(self.writes, self.writes[1:], strict=False)), default=0.0)


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("innkeeper_ipc_dropped_total", {"reason": reason}) or 0.0


async def test_bad_frames_are_dropped_and_counted_without_stalling_heartbeats(
        redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    signer = ipc_signer()
    channel = keys.bus_cluster_channel(0)
    body = _crafted_body()
    attack = {
        "unsigned": body,
        "bad_signature": FORGER.seal(channel, body),
        "unknown_key": STRANGER.seal(channel, body),
        "stale": signer.seal(channel, body, sent_at=time.time() - 10 * signer.max_age_s),  # a captured old frame
        "oversize": b"\x90" * (MAX_FRAME_BYTES + 1),
        "too_complex": signer.seal(channel, body),  # even a key holder cannot make a cluster decode it
    }
    rounds = 3
    before = {reason: _dropped(reason) for reason in attack}
    async with Bus(redis, keys, 0, signer=signer, registry=_registry()) as cluster, \
            Bus(redis, keys, f"cli-{uuid.uuid4().hex[:8]}", signer=signer) as client:
        assert await client.request(0, "whoami") == "cluster-0"
        pace = _Pace(redis, keys.heartbeat(0))
        pace.start()
        try:
            await asyncio.sleep(0.2)  # the pace before the attack
            for _ in range(rounds):
                for frame in attack.values():
                    assert await redis.publish(channel, frame) == 1
            await wait_for(lambda: all(cluster.dropped[r] >= rounds for r in attack), timeout=60,
                           message=f"every bad frame counted (have {dict(cluster.dropped)})")
            # the cluster answers while it has just been flooded
            assert await client.request(0, "whoami", timeout=5) == "cluster-0"
        finally:
            await pace.stop()
        assert dict(cluster.dropped) == dict.fromkeys(attack, rounds)
        assert cluster.served == 2
    for reason in attack:
        assert _dropped(reason) - before[reason] == rounds, reason
    # 18 MiB of hostile frames later: the loop never stalled, the heartbeat kept its 50 ms pace
    # (before the fix each crafted frame held the loop for over a second)
    print(f"max loop lag {pace.max_lag * 1000:.1f} ms, longest gap between heartbeat writes "
          f"{pace.max_gap * 1000:.1f} ms, {len(pace.writes)} writes")
    assert pace.max_lag < 0.5, f"the event loop stalled for {pace.max_lag:.3f} s"
    assert pace.max_gap < 0.6, f"heartbeat writes were {pace.max_gap:.3f} s apart"
    assert len(pace.writes) >= 5


async def test_a_replayed_request_is_served_once(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    signer = ipc_signer()
    calls: list[str] = []
    channel = keys.bus_cluster_channel(0)
    captured = signer.seal(channel, encode(Request(id="captured-1", action="whoami", args={}, sender="cli-x",
                                                   reply_to=keys.bus_cluster_channel("cli-x"))))
    async with Bus(redis, keys, 0, signer=signer, registry=_registry(calls)) as cluster:
        for _ in range(3):
            await redis.publish(channel, captured)
        await wait_for(lambda: cluster.dropped["replay"] == 2, message="the two copies dropped as replays")
        await wait_for(lambda: cluster.served == 1, message="the request served")
        assert calls == ["whoami"]


async def test_requests_beyond_the_limit_are_answered_busy_not_queued(redis: aioredis.Redis,
                                                                      redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    release = asyncio.Event()
    calls: list[str] = []
    async with Bus(redis, keys, 0, signer=ipc_signer(), registry=_registry(calls, release),
                   max_concurrent=2) as cluster, \
            Bus(redis, keys, f"cli-{uuid.uuid4().hex[:8]}", signer=ipc_signer()) as client:
        asks = [asyncio.create_task(client.request(0, "hold", timeout=20)) for _ in range(6)]
        try:
            await wait_for(lambda: sum(t.done() for t in asks) == 4, timeout=10,
                           message="four requests answered at once while two run")
            refused = [t for t in asks if t.done()]
            for task in refused:
                exc = task.exception()
                assert isinstance(exc, IPCError) and exc.code is ErrorCode.IPC_BUSY, exc
                assert "busy" in exc.message
            assert calls == ["hold", "hold"] and cluster.running == 2  # nothing queued behind them
            release.set()
            assert [await t for t in asks if t not in refused] == ["done", "done"]
        finally:
            release.set()
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
        assert await client.request(0, "whoami") == "cluster-0"  # room again


async def test_key_rotation_on_the_bus(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    k1, k2 = ("k1", os.urandom(32)), ("k2", os.urandom(32))
    # mid-rotation: the cluster already signs with the new key, the CLI still with the old one
    async with Bus(redis, keys, 0, signer=FrameSigner([k2, k1]), registry=_registry()) as cluster, \
            Bus(redis, keys, "cli-old", signer=FrameSigner([k1, k2])) as old_cli, \
            Bus(redis, keys, "cli-none", signer=FrameSigner([("k3", os.urandom(32))])) as outsider:
        assert await old_cli.request(0, "whoami") == "cluster-0"
        with pytest.raises(IPCError) as info:
            await outsider.request(0, "whoami", timeout=0.5)
        assert info.value.code is ErrorCode.IPC_TIMEOUT
        await wait_for(lambda: cluster.dropped["unknown_key"] == 1, message="the outsider's request dropped")


async def test_cache_invalidations_must_be_signed(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    writer, reader = SharedCache(redis, keys, signer=ipc_signer()), SharedCache(redis, keys, signer=ipc_signer())
    async with writer, reader:
        await writer.set("guild", 1, {"prefix": "?"})
        await wait_for(lambda: reader.invalidations == 1, message="the writer's own invalidation")
        assert await reader.get("guild", 1) == {"prefix": "?"} and reader.local_size() == 1
        event = Event(name=INVALIDATE_EVENT, data={"ns": "guild", "keys": ["1"], "origin": "someone"})
        channel = keys.cache_channel()
        before = {r: _dropped(f"cache_{r}") for r in ("unsigned", "bad_signature")}
        await redis.publish(channel, encode(event))
        await redis.publish(channel, FORGER.seal(channel, encode(event)))
        await wait_for(lambda: all(_dropped(f"cache_{r}") - n == 2 for r, n in before.items()),
                       message="the forged invalidations counted (by both caches)")
        assert reader.local_size() == 1 and reader.invalidations == 1  # neither was acted on
        await writer.delete("guild", 1)  # a real, signed one is
        await wait_for(lambda: reader.local_size() == 0, message="the signed invalidation applied")


async def test_cli_reload_needs_the_key(redis_url: str, redis_prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INNKEEPER_IPC_KEYS"}
    env.update(REDIS_URL=redis_url, INNKEEPER_REDIS_PREFIX=redis_prefix, INNKEEPER_LOG_FORMAT="text")
    proc = await asyncio.create_subprocess_exec(*INNKEEPER_CLI, "reload", "settings", cwd=PROJECT_ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, err
    assert "INNKEEPER_IPC_KEYS is not set" in err.decode()
