"""The IPC bus against a real Redis: request/response, broadcast-gather, garbage, failures."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from innkeeper.errors import ErrorCode, IPCError, UsageError
from ipc.bus import Bus, live_clusters
from ipc.keys import Keys
from ipc.messages import MAX_MESSAGE_BYTES, Event, Request, Response, encode
from ipc.registry import HandlerRegistry
from tests.support import ipc_signer, wait_for

pytestmark = pytest.mark.integration


def _registry(cluster_id: int) -> HandlerRegistry:
    registry = HandlerRegistry(default_timeout=5.0)

    @registry.handler("whoami")
    async def whoami(args: dict[str, Any]) -> dict[str, Any]:
        return {"cluster": cluster_id, "echo": args.get("echo")}

    @registry.handler("boom")
    async def boom(args: dict[str, Any]) -> None:
        raise ValueError("the handler exploded")

    @registry.handler("slow", timeout=0.2)
    async def slow(args: dict[str, Any]) -> None:
        await asyncio.Event().wait()  # never answers: only the handler timeout ends it

    return registry


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, client_name=redis_prefix)  # named: tests kill only their own links
    yield client
    await client.aclose()


@pytest.fixture
async def clusters(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[list[Bus]]:
    keys = Keys(redis_prefix)
    buses = [Bus(redis, keys, i, signer=ipc_signer(), registry=_registry(i)) for i in range(4)]
    for bus in buses:
        await bus.start()
    yield buses
    for bus in buses:
        await bus.stop()


@pytest.fixture
async def cli(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[Bus]:
    async with Bus(redis, Keys(redis_prefix), f"cli-{uuid.uuid4().hex[:8]}", signer=ipc_signer()) as bus:
        yield bus


async def test_request_response(clusters: list[Bus], cli: Bus) -> None:
    assert await cli.request(2, "whoami", {"echo": "hi"}) == {"cluster": 2, "echo": "hi"}
    # a cluster can ask another cluster, and itself
    assert (await clusters[0].request(3, "whoami"))["cluster"] == 3
    assert (await clusters[1].request(1, "whoami"))["cluster"] == 1
    assert clusters[2].served == 1


async def test_broadcast_gather_across_four_clusters(clusters: list[Bus], cli: Bus) -> None:
    result = await cli.broadcast_gather("whoami", {"echo": 1}, expected={0, 1, 2, 3}, timeout=5)
    assert result.ok
    assert result.results == {i: {"cluster": i, "echo": 1} for i in range(4)}
    # only the expected clusters answer
    partial = await cli.broadcast_gather("whoami", expected={1, 3}, timeout=5)
    assert set(partial.results) == {1, 3} and not partial.missing


async def test_gather_with_a_stopped_cluster_names_it(clusters: list[Bus], cli: Bus) -> None:
    await clusters[2].stop()
    result = await cli.broadcast_gather("whoami", expected={0, 1, 2, 3}, timeout=0.5)
    assert set(result.results) == {0, 1, 3}
    assert result.missing == {2}
    assert not result.ok
    with pytest.raises(IPCError) as info:
        await cli.request(2, "whoami", timeout=0.5)
    assert info.value.code is ErrorCode.IPC_TIMEOUT
    assert "cluster 2" in info.value.message


async def test_unknown_action_and_handler_failures_become_error_responses(clusters: list[Bus], cli: Bus) -> None:
    with pytest.raises(IPCError) as info:
        await cli.request(0, "format_disk")
    assert info.value.code is ErrorCode.IPC_UNKNOWN_ACTION
    assert "format_disk" in info.value.message

    with pytest.raises(IPCError) as info:
        await cli.request(1, "boom")
    assert info.value.code is ErrorCode.INTERNAL
    assert "ValueError: the handler exploded" in info.value.message

    with pytest.raises(IPCError) as info:
        await cli.request(1, "slow", timeout=3)
    assert info.value.code is ErrorCode.IPC_TIMEOUT  # the handler's own 0.2 s limit, answered by the cluster

    gathered = await cli.broadcast_gather("boom", expected={0, 1, 2, 3}, timeout=5)
    assert set(gathered.errors) == {0, 1, 2, 3} and not gathered.results and not gathered.missing
    assert gathered.errors[3].code == ErrorCode.INTERNAL.value
    # the bus still serves after all that
    assert (await cli.request(1, "whoami"))["cluster"] == 1


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("innkeeper_ipc_dropped_total", {"reason": reason}) or 0.0


async def test_garbage_is_dropped_and_counted_and_the_bus_keeps_serving(
        clusters: list[Bus], cli: Bus, redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    target = clusters[0]
    before = {r: _dropped(r) for r in ("not_msgpack", "not_a_map", "unknown_kind", "version", "invalid",
                                       "oversize", "late", "bad_reply_to", "no_listener")}
    garbage = [
        os.urandom(64), b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb({"kind": "nuke", "v": 1}),
        msgpack.packb({"kind": "request", "v": 99, "id": "x"}),
        msgpack.packb({"kind": "request", "v": 1, "id": "x", "action": "whoami"}),  # no sender / reply_to
        b"\x00" * (MAX_MESSAGE_BYTES + 10),
        encode(Response(id="nobody-waits", cluster_id=3, ok=True, result=1)),
        encode(Request(id="evil", action="whoami", args={}, sender=9, reply_to=keys.cache_channel())),
        encode(Event(name="nobody.listens")),
    ]
    channel = keys.bus_cluster_channel(0)
    for blob in garbage:  # validly signed: these reach the decoder and the routing checks
        await redis.publish(channel, target.signer.seal(channel, blob))
    expected = {"not_msgpack": 2, "not_a_map": 1, "unknown_kind": 1, "version": 1, "invalid": 1, "oversize": 1,
                "late": 1, "bad_reply_to": 1, "no_listener": 1}
    await wait_for(lambda: all(target.dropped[r] >= n for r, n in expected.items()), timeout=10,
                   message=f"drops counted (have {dict(target.dropped)})")
    assert dict(target.dropped) == expected
    for reason, n in expected.items():
        assert _dropped(reason) - before[reason] >= n
    assert target.served == 0  # the evil request with a foreign reply_to was not answered
    assert (await cli.request(0, "whoami", {"echo": "still here"}))["echo"] == "still here"


async def test_live_clusters_reads_heartbeat_key_names(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    assert await live_clusters(redis, keys) == set()
    for cid in (0, 3, 11):
        await redis.set(keys.heartbeat(cid), msgpack.packb({"cluster_id": cid}), ex=30)
    await redis.set(keys.plan(), b"not a heartbeat")
    assert await live_clusters(redis, keys) == {0, 3, 11}


async def test_broadcast_gather_defaults_to_live_clusters(clusters: list[Bus], cli: Bus,
                                                          redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    for cid in (1, 2, 7):  # 7 has a heartbeat but no bus: it must be reported missing
        await redis.set(keys.heartbeat(cid), msgpack.packb({"cluster_id": cid}), ex=30)
    result = await cli.broadcast_gather("whoami", timeout=0.5)
    assert set(result.results) == {1, 2} and result.missing == {7}


async def test_client_without_registry_answers_nothing(cli: Bus, redis: aioredis.Redis, redis_prefix: str) -> None:
    other = Bus(redis, Keys(redis_prefix), "status", signer=ipc_signer())
    async with other:
        with pytest.raises(IPCError):
            await cli.request("status", "whoami", timeout=0.3)
        await wait_for(lambda: other.dropped["not_served"] == 1, message="request to a client dropped")


async def test_bad_construction_is_refused(redis_url: str, redis_prefix: str) -> None:
    text_client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(UsageError):
            Bus(text_client, Keys(redis_prefix), 1, signer=ipc_signer())
    finally:
        await text_client.aclose()


async def test_bus_survives_a_dropped_connection(clusters: list[Bus], cli: Bus, redis: aioredis.Redis,
                                                 redis_prefix: str) -> None:
    # kill this test's pub/sub connections from the server side; redis-py or our loop reconnects
    clients = [c for c in await redis.client_list(_type="pubsub") if c.get("name") == redis_prefix]
    assert len(clients) == 5
    for c in clients:
        await redis.client_kill_filter(_id=c["id"])

    async def all_answer() -> bool:
        result = await cli.broadcast_gather("whoami", expected={0, 1, 2, 3}, timeout=0.5)
        return result.ok

    await wait_for(all_answer, timeout=20, message="every cluster serving again after its link was killed")
    assert (await cli.request(3, "whoami", timeout=2))["cluster"] == 3
