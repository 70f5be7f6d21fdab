"""Shared state end to end: the shared REST limits, the IPC bus and a Redis outage, against the real simulator.

* Four clusters (in-process ``ClusterBot``s, each with its own HTTP client and limiter, as in four
  processes) drive one channel's bucket, then the global limit, as hard as they can: the
  simulator answers no 429 while throughput stays at or above 90 % of what it allows. With
  ``INNKEEPER_SHARED_RATELIMIT=false`` the same workload earns 429s (the test can fail).
* Three cluster *processes* (``python -m shard``) on one bus: ``/status`` gathers over IPC,
  garbage on the bus channel is dropped and counted while the bus keeps serving, a cluster killed
  with SIGKILL shows up as missing in a broadcast and in ``innkeeper reload``, and once its heartbeat
  expires ``innkeeper reload shard.cogs.core`` succeeds on the two that are left.
* A cluster process on a private ``redis-server`` that the test kills and starts again: the bot
  keeps answering slash and prefix commands (every reply arrives), falls back to local limits
  (``innkeeper_ratelimit_shared`` 0) and shares them again once Redis is back.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import msgpack
import pytest
import redis.asyncio as aioredis
from discord.http import handle_message_parameters

from innkeeper.settings import PROJECT_ROOT
from ipc.bus import Bus, live_clusters
from ipc.heartbeat import read_heartbeats
from ipc.keys import Keys
from ipc.messages import MESSAGE_VERSION
from ipc.signing import FrameSigner
from ipc.snapshots import GuildSnapshotStore
from shard.bot import ClusterBot
from shard.rest_hook import limiter_of
from tests.e2e.commands import BotFactory, channel_messages
from tests.procs import (
    Proc,
    SimulatorProc,
    bot_api,
    cluster_env,
    http_json,
    metrics_port,
    start_cluster,
    start_simulator,
)
from tests.support import DEV_CLI_ENV, INNKEEPER_CLI, PrivateRedis, ipc_signer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: The simulator's limits for the throughput test: 10 messages per 2 s per channel, 20 requests/s bot-wide.
MESSAGE_LIMIT, MESSAGE_WINDOW, GLOBAL_RATE = 10, 2.0, 20
CLUSTERS = 4


# --- helpers ----------------------------------------------------------------------------------------


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 - local
        return resp.read().decode()


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample (``None`` when absent); with no labels, the sum over every label set."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if any(found.get(k) != v for k, v in labels.items()):
            continue
        total = (total or 0.0) + float(match.group(3))
    return total


def _limited(sim: SimulatorProc) -> dict[str, int]:
    stats = sim.stats()
    return {**stats["rate_limited"], "invalid_requests": stats["invalid_requests"]}


@dataclass
class Drive:
    """What one burst of sends achieved, as the simulator saw it."""

    seconds: float
    window: float  # the length of the fixed window that binds (the bucket's or the global one)
    limit: int  # requests allowed per window
    sent: int = 0  # requests that succeeded, including those that left after the deadline
    errors: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # server time of each accepted message, from its id
    per_cluster: dict[int, int] = field(default_factory=dict)

    @property
    def allowed(self) -> int:
        """The most a perfect client could get accepted in ``seconds`` from its first request."""
        return self.limit * math.ceil(self.seconds / self.window - 1e-9)

    @property
    def accepted(self) -> int:
        """Messages the simulator accepted within ``seconds`` of the first one."""
        start = min(self.times, default=0.0)
        return sum(1 for t in self.times if t < start + self.seconds)

    @property
    def fraction(self) -> float:
        return self.accepted / self.allowed

    def describe(self) -> str:
        return (f"{self.accepted} of {self.allowed} allowed in {self.seconds:g}s ({self.fraction:.1%}); "
                f"{self.sent} sent in all, per cluster {dict(sorted(self.per_cluster.items()))}")


async def _drive(bots: list[ClusterBot], channels: list[int], *, tasks_per_bot: int,
                 seconds: float, window: float, limit: int) -> Drive:
    """Every bot sends messages with ``tasks_per_bot`` tasks, round robin over ``channels``, until the deadline.

    Throughput is measured on the simulator's clock: each accepted message's id holds the time the
    simulator created it. (discord.py returns from the send that empties a bucket only after the
    bucket resets, so the client's clock would misplace those sends by a window.)
    """
    loop = asyncio.get_running_loop()
    drive = Drive(seconds, window, limit)
    deadline = loop.time() + seconds

    async def sender(bot: ClusterBot, offset: int) -> None:
        n = offset
        while loop.time() < deadline:
            channel = channels[n % len(channels)]
            n += 1
            try:
                with handle_message_parameters(content=f"cluster {bot.cluster_id} message {n}") as params:
                    message = await bot.http.send_message(channel, params=params)
            except discord.HTTPException as exc:
                drive.errors.append(f"cluster {bot.cluster_id}: {exc.status} {exc.text}")
                continue
            drive.sent += 1
            drive.times.append(discord.utils.snowflake_time(int(message["id"])).timestamp())
            drive.per_cluster[bot.cluster_id] = drive.per_cluster.get(bot.cluster_id, 0) + 1

    senders = [sender(bot, i * 7 + t * 3) for i, bot in enumerate(bots) for t in range(tasks_per_bot)]
    await asyncio.wait_for(asyncio.gather(*senders), timeout=seconds + 30)
    return drive


async def _start_clusters(start_bot: BotFactory, sim: SimulatorProc, database_url: str, count: int, *,
                          shared: bool) -> list[ClusterBot]:
    env = {"DATABASE_URL": database_url, "INNKEEPER_SYNC_COMMANDS": "false",
           "INNKEEPER_GLOBAL_RATE": str(GLOBAL_RATE), "INNKEEPER_SHARED_RATELIMIT": "true" if shared else "false",
           "INNKEEPER_LOG_FORMAT": "text", "INNKEEPER_LOG_LEVEL": "WARNING"}
    return list(await asyncio.gather(*(
        start_bot(sim, shard_ids=[i], shard_count=count, cluster_id=i, env=env, max_concurrency=count)
        for i in range(count))))


def _rate_sim(tmp_path: Path, shards: int) -> Any:
    return start_simulator(tmp_path / "logs", guilds=40, shards=shards, max_concurrency=shards, identify_window=0.2,
                           extra_args=("--global-rate", str(GLOBAL_RATE), "--message-limit", str(MESSAGE_LIMIT),
                                       "--message-window", str(MESSAGE_WINDOW)))


# --- 1. shared REST limits across four clusters -----------------------------------------------------


async def test_four_clusters_share_one_bucket_and_the_global_limit(tmp_path: Path, migrated_db: str,
                                                                   start_bot: BotFactory) -> None:
    with _rate_sim(tmp_path, CLUSTERS) as sim:
        bots = await _start_clusters(start_bot, sim, migrated_db, CLUSTERS, shared=True)
        assert all((lim := limiter_of(b)) is not None and lim.shared for b in bots)
        assert len({id(limiter_of(b)) for b in bots}) == CLUSTERS  # one limiter per cluster, as in 4 processes
        channels = [int(g["channels"][0]) for g in sim.world(limit=40)["guilds"]]
        before = _limited(sim)
        # one channel: 4 clusters x 4 senders against 10 messages per 2 s
        one = await _drive(bots, channels[:1], tasks_per_bot=4, seconds=4 * MESSAGE_WINDOW,
                           window=MESSAGE_WINDOW, limit=MESSAGE_LIMIT)
        after_one = _limited(sim)
        # many channels: 39 buckets hold 195/s, so the 20/s global limit binds
        many = await _drive(bots, channels[1:], tasks_per_bot=4, seconds=5.0, window=1.0, limit=GLOBAL_RATE)
        after_many = _limited(sim)

        report = (f"one bucket: {one.describe()}; global: {many.describe()}; "
                  f"429s {before} -> {after_one} -> {after_many}")
        print(report)
        assert not one.errors and not many.errors, (one.errors + many.errors)[:5]
        assert after_many == before, report  # no 429 of any scope, no invalid request
        assert one.fraction >= 0.9, report
        assert many.fraction >= 0.9, report
        assert len(many.per_cluster) == CLUSTERS, report  # every cluster got its share of the global limit
        assert all((lim := limiter_of(b)) is not None and lim.shared for b in bots)


async def test_without_the_shared_limiter_the_same_workload_earns_429s(tmp_path: Path, migrated_db: str,
                                                                      start_bot: BotFactory) -> None:
    """The control: ``INNKEEPER_SHARED_RATELIMIT=false`` leaves each cluster on discord.py's own limits."""
    with _rate_sim(tmp_path, 2) as sim:
        bots = await _start_clusters(start_bot, sim, migrated_db, 2, shared=False)
        assert all(limiter_of(b) is None for b in bots)
        channel = int(sim.world(limit=1)["guilds"][0]["channels"][0])
        before = _limited(sim)
        drive = await _drive(bots, [channel], tasks_per_bot=4, seconds=2 * MESSAGE_WINDOW, window=MESSAGE_WINDOW,
                             limit=MESSAGE_LIMIT)
        after = _limited(sim)
        print(f"without sharing: {drive.describe()}; 429s {before} -> {after}")
        assert after["user"] > before["user"], (before, after)


# --- 2. the bus across cluster processes ------------------------------------------------------------


GARBAGE = (
    b"\xc1\xc1 not msgpack at all",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"kind": "__import__('os').system('true')", "v": MESSAGE_VERSION}),
    msgpack.packb({"kind": "request", "v": MESSAGE_VERSION + 41, "id": "x"}),
    msgpack.packb({"kind": "request", "v": MESSAGE_VERSION, "id": 5, "action": ["ping"]}),
)


@dataclass(frozen=True)
class Where:
    """What the ``innkeeper`` CLI needs to reach this test's clusters, and nobody else's."""

    redis_url: str
    database_url: str
    prefix: str


async def _innkeeper(where: Where, *args: str) -> tuple[int, str]:
    env = {**os.environ, "REDIS_URL": where.redis_url, "DATABASE_URL": where.database_url,
           "INNKEEPER_REDIS_PREFIX": where.prefix, "INNKEEPER_LOG_FORMAT": "text", **DEV_CLI_ENV}
    proc = await asyncio.create_subprocess_exec(*INNKEEPER_CLI, *args, cwd=PROJECT_ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


_USERS = itertools.count()


def _next_member(guild: dict[str, Any]) -> str:
    """A different member for each command, so per-user command throttles stay out of the way."""
    members: list[str] = guild["members"]
    return members[next(_USERS) % len(members)]


async def _slash(sim: SimulatorProc, guild: dict[str, Any], name: str, *, timeout: float = 10) -> dict[str, Any]:
    body = {"guild_id": guild["id"], "channel_id": guild["channels"][0], "user_id": _next_member(guild),
            "name": name, "options": [], "timeout": timeout}
    status, reply = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/interactions", body)
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


async def _answer(sim: SimulatorProc, reply: dict[str, Any]) -> str:
    """The text of a slash answer, immediate or (after a defer) the first follow-up."""
    if reply["callback"]["type"] == 4:
        return str(reply["callback"]["data"]["content"])
    iid = reply["interaction_id"]

    async def followup() -> str | None:
        _, data = await asyncio.to_thread(http_json, "GET", f"{sim.url}/_sim/interactions/{iid}")
        msgs = [*(data.get("original_edits") or []), *(data.get("followups") or [])]
        return str(msgs[0].get("content")) if msgs else None

    return await wait_for(followup, timeout=15, message=f"the answer to interaction {iid}")


@pytest.fixture
async def bus_redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_bus_between_cluster_processes(tmp_path: Path, migrated_db: str, redis_url: str, redis_prefix: str,
                                             bus_redis: aioredis.Redis) -> None:
    keys = Keys(redis_prefix)
    with start_simulator(tmp_path / "logs", guilds=30, shards=3, max_concurrency=3, identify_window=0.2) as sim:
        env = cluster_env(sim, redis_prefix, redis_url=redis_url, database_url=migrated_db, extra={
            "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_HEARTBEAT_TTL": "10", "INNKEEPER_SYNC_COMMANDS": "false"})
        procs = [start_cluster(tmp_path / "logs", env, cluster=i, shard_ids=str(i), shard_count=3) for i in range(3)]
        try:
            async with Bus(bus_redis, keys, f"cli-e2e-{uuid.uuid4().hex[:8]}", signer=ipc_signer()) as bus:
                await _bus_checks(sim, procs, bus, keys, Where(redis_url, migrated_db, redis_prefix))
        finally:
            for proc in procs:
                proc.stop()


async def _bus_checks(sim: SimulatorProc, procs: list[Proc], bus: Bus, keys: Keys, where: Where) -> None:
    async def all_ready() -> bool:
        for proc in procs:
            assert proc.alive(), proc.output()[-3000:]
        got = await bus.broadcast_gather("ping", expected={0, 1, 2}, timeout=1.0)
        return len(got.results) == 3 and all(r["ready"] for r in got.results.values())

    await wait_for(all_ready, timeout=90, interval=0.3, message="3 clusters answering ping over the bus, READY")
    world = sim.world(limit=30)["guilds"]
    by_shard = {s: [g for g in world if g["shard_id"] == s] for s in range(3)}

    # every cluster saved a snapshot of each of its guilds once READY
    async def snapshots_saved() -> bool:
        for shard, guilds in by_shard.items():
            indexed = {int(g) for g in await bus.redis.smembers(keys.shard_snapshot_index(shard))}
            if indexed != {int(g["id"]) for g in guilds}:
                return False
        return True

    await wait_for(snapshots_saved, timeout=20, message="a guild snapshot of every guild, indexed by shard")
    first = by_shard[0][0]
    snapshot = await GuildSnapshotStore(bus.redis, keys).load(int(first["id"]))
    assert snapshot is not None and snapshot["shard_id"] == 0, snapshot
    assert [c["id"] for c in snapshot["channels"]][:1] == first["channels"][:1] and snapshot["roles"], snapshot

    # /status on cluster 1 gathers every cluster over the bus
    status = await _answer(sim, await _slash(sim, by_shard[1][0], "status"))
    assert "3 cluster(s), 3 shard(s), 30 guilds" in status and "live answers from every cluster" in status, status

    # garbage on the bus channel, validly signed (it reaches the decoder) or not signed at all, or signed
    # with a key the clusters do not hold: dropped and counted by every cluster, and the bus keeps serving
    beats = await read_heartbeats(bus.redis, keys)
    ports = {cid: b["metrics_port"] for cid, b in beats.items()}
    assert set(ports) == {0, 1, 2} and all(ports.values()), beats
    before = {cid: _metric(await asyncio.to_thread(_metrics, port), "innkeeper_ipc_dropped_total") or 0.0
              for cid, port in ports.items()}
    outsider = FrameSigner([("dev", b"not the key the clusters hold!!!")])
    junks = [bus.signer.seal(keys.bus_channel(), junk) for junk in GARBAGE]
    junks += [GARBAGE[0], outsider.seal(keys.bus_channel(), GARBAGE[1])]
    for junk in junks:
        assert await bus.redis.publish(keys.bus_channel(), junk) == 3
    gathered = await bus.broadcast_gather("guild_count", expected={0, 1, 2}, timeout=5)
    assert gathered.ok and gathered.results == {s: len(by_shard[s]) for s in range(3)}, gathered

    async def counted() -> bool:
        for cid, port in ports.items():
            now = _metric(await asyncio.to_thread(_metrics, port), "innkeeper_ipc_dropped_total") or 0.0
            assert now <= before[cid] + len(junks), (cid, before[cid], now)
            if now < before[cid] + len(junks):
                return False
        return True

    await wait_for(counted, timeout=10, message="every cluster counting the garbage as dropped")
    text = await asyncio.to_thread(_metrics, ports[0])
    for reason in ("not_msgpack", "not_a_map", "unknown_kind", "version", "invalid", "unsigned", "bad_signature"):
        assert (_metric(text, "innkeeper_ipc_dropped_total", reason=reason) or 0) >= 1, reason
    assert all(p.alive() for p in procs)

    # one cluster dies without a word: innkeeper reload (its heartbeat still lives) and a broadcast name it
    procs[2].stop(signal.SIGKILL)
    assert 2 in await live_clusters(bus.redis, keys)
    code, out = await _innkeeper(where, "reload", "shard.cogs.core", "--timeout", "3")
    assert code == 1, out
    assert "cluster 0: ok" in out and "cluster 1: ok" in out and "cluster 2: no answer within 3s" in out, out
    assert "2 of 3 clusters ok" in out, out
    partial = await bus.broadcast_gather("guild_count", expected={0, 1, 2}, timeout=2)
    assert partial.missing == {2} and set(partial.results) == {0, 1} and not partial.errors, partial
    assert not partial.ok

    # its heartbeat expires: the two clusters left reload the core cog, and it still answers
    async def two_live() -> bool:
        return await live_clusters(bus.redis, keys) == {0, 1}

    await wait_for(two_live, timeout=20, message="cluster 2's heartbeat to expire")
    code, out = await _innkeeper(where, "reload", "shard.cogs.core")
    assert code == 0, out
    assert "cluster 0: ok" in out and "cluster 1: ok" in out and "2 of 2 clusters ok" in out, out
    for shard in (0, 1):
        pong = await _answer(sim, await _slash(sim, by_shard[shard][0], "ping"))
        assert pong.startswith(f"Pong! shard {shard}, cluster {shard}"), pong
    status = await _answer(sim, await _slash(sim, by_shard[0][1], "status"))
    assert "2 cluster(s), 2 shard(s)" in status and "live answers from every cluster" in status, status

    # a clean shutdown saves the cluster's snapshots one last time
    assert procs[0].stop() == 0, procs[0].output()[-3000:]
    assert f"saved {len(by_shard[0])} guild snapshots at shutdown" in procs[0].output()


# --- 3. a Redis outage mid-run ----------------------------------------------------------------------




async def _prefix_ping(sim: SimulatorProc, guild: dict[str, Any], bot_id: str) -> dict[str, Any]:
    """Post ``!ping`` and wait for the bot's reply to it."""
    channel = guild["channels"][0]
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": guild["id"], "channel_id": channel, "author_id": _next_member(guild), "content": "!ping"})
    assert status == 200, posted

    async def reply() -> dict[str, Any] | None:
        # the bot's first message after ours that replies to it or to nothing (``ctx.send`` of /ping)
        later = [m for m in await channel_messages(sim, channel) if int(m["id"]) > int(posted["id"])
                 and m["author"]["id"] == bot_id
                 and (m.get("message_reference") or {}).get("message_id", posted["id"]) == posted["id"]]
        return min(later, key=lambda m: int(m["id"])) if later else None

    return await wait_for(reply, timeout=20, message=f"the reply to !ping {posted['id']}")


async def test_redis_down_at_start_and_mid_run(tmp_path: Path, migrated_db: str, private_redis: PrivateRedis) -> None:
    prefix = f"ikt-{uuid.uuid4().hex[:12]}"
    keys = Keys(prefix)
    with start_simulator(tmp_path / "logs", guilds=20, shards=2, max_concurrency=2, identify_window=0.2) as sim:
        env = cluster_env(sim, prefix, redis_url=private_redis.url, database_url=migrated_db, extra={
            "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_HEARTBEAT_TTL": "5", "INNKEEPER_SYNC_COMMANDS": "false"})
        proc = start_cluster(tmp_path / "logs", env, cluster=0, shard_ids="0-1", shard_count=2)
        redis = aioredis.from_url(private_redis.url)
        try:
            # Redis is down at start, so the heartbeat cannot carry the metrics port: the log line does.
            def port() -> int | None:
                assert proc.alive(), proc.output()[-3000:]
                return metrics_port(proc)

            await _outage(sim, proc, private_redis, redis, keys, await wait_for(port, timeout=60,
                                                                               message="the metrics port"))
        finally:
            await redis.aclose()
            proc.stop()


async def _outage(sim: SimulatorProc, proc: Proc, server: PrivateRedis, redis: aioredis.Redis, keys: Keys,
                  port: int) -> None:
    async def routes_shared_now() -> bool:  # a response reaches Redis just after its reply is seen
        return await redis.hlen(keys.rl_route_map()) >= 1

    world = sim.world(limit=20)["guilds"]
    guilds = [next(g for g in world if g["shard_id"] == s) for s in (0, 1)]
    bot_id = await _bot_id(sim)

    async def shared_gauge() -> float | None:
        return _metric(await asyncio.to_thread(_metrics, port), "innkeeper_ratelimit_shared")

    async def gauge_is(value: float) -> bool:
        return await shared_gauge() == value

    async def answers_ping() -> bool:
        assert proc.alive(), proc.output()[-3000:]
        body = {"guild_id": guilds[1]["id"], "channel_id": guilds[1]["channels"][0],
                "user_id": guilds[1]["members"][0], "name": "ping", "options": [], "timeout": 2}
        status, _ = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/interactions", body)
        return status == 200

    async def ready_on_bus() -> bool:
        assert proc.alive(), proc.output()[-3000:]
        async with Bus(redis, keys, f"cli-e2e-{uuid.uuid4().hex[:8]}", signer=ipc_signer()) as bus:
            got = await bus.broadcast_gather("ping", expected={0}, timeout=1.0)
        return got.ok and bool(got.results[0]["ready"])

    # 1. Redis is down at start: the cluster identifies without the shared queue and answers
    await wait_for(answers_ping, timeout=60, interval=0.5, message="/ping answered while Redis is down")
    lost_before = sim.stats()["lost"]  # the probes sent before the shards connected had no session to go to
    for guild in guilds:
        assert (await _answer(sim, await _slash(sim, guild, "ping"))).startswith("Pong!")
        assert str((await _prefix_ping(sim, guild, bot_id))["content"]).startswith("Pong!")
    assert await shared_gauge() == 0.0
    text = await asyncio.to_thread(_metrics, port)
    assert (_metric(text, "innkeeper_identify_local_total") or 0) == 2, "both shards paced locally"

    # Redis comes up: the bus joins, shared limiting starts, the shared cache takes over guild configuration
    server.start()
    await wait_for(ready_on_bus, timeout=30, interval=0.3, message="the cluster answering on the bus")
    await wait_for(lambda: gauge_is(1.0), timeout=30, message="innkeeper_ratelimit_shared 1 once Redis is up")

    async def cache_subscribed() -> bool:
        [(_, count)] = await redis.pubsub_numsub(keys.cache_channel())
        return int(count) == 1

    await wait_for(cache_subscribed, timeout=30, message="the shared cache subscribed to invalidations")
    for guild in guilds:
        assert str((await _prefix_ping(sim, guild, bot_id))["content"]).startswith("Pong!")
        assert await redis.exists(keys.cache("guildcfg", guild["id"])), "guild config cached in Redis"
    await wait_for(routes_shared_now, timeout=10, message="the limiter to learn routes in Redis")

    # 2. Redis dies mid-run: slash and prefix commands keep being answered, every reply arrives
    server.kill()
    started = time.monotonic()
    for guild in (*guilds, *guilds):
        pong = await _answer(sim, await _slash(sim, guild, "ping"))
        assert pong.startswith(f"Pong! shard {guild['shard_id']}"), pong
        reply = await _prefix_ping(sim, guild, bot_id)
        assert str(reply["content"]).startswith("Pong!"), reply
    down_for = time.monotonic() - started
    assert proc.alive(), proc.output()[-3000:]
    await wait_for(lambda: gauge_is(0.0), timeout=10, message="innkeeper_ratelimit_shared 0 while Redis is down")
    fallbacks = _metric(await asyncio.to_thread(_metrics, port), "innkeeper_ratelimit_fallbacks_total")
    assert fallbacks is not None and fallbacks >= 2  # at start, and now

    # Redis is back on the same socket (empty): shared limiting, the heartbeat and the bus recover
    server.start()
    await redis.connection_pool.disconnect()  # the test's own client: drop its connections to the dead server
    await wait_for(lambda: gauge_is(1.0), timeout=30, message="innkeeper_ratelimit_shared back to 1")

    async def heartbeat_back() -> bool:
        return await live_clusters(redis, keys) == {0}

    await wait_for(heartbeat_back, timeout=15, message="the cluster's heartbeat in the new Redis")
    await wait_for(ready_on_bus, timeout=30, interval=0.3, message="the cluster's bus answering again")
    reply = await _prefix_ping(sim, guilds[1], bot_id)
    assert str(reply["content"]).startswith("Pong!")
    await wait_for(routes_shared_now, timeout=10, message="sends going through the shared limiter again")
    stats = sim.stats()
    assert stats["lost"] == lost_before and stats["rate_limited"] == {"user": 0, "global": 0, "shared": 0}, stats
    # the bot's own messages: one per prefix command (9) and one per slash answer (6, plus the start-up
    # probes it answered), none lost, none doubled
    assert stats["acknowledged"] >= 7 and stats["messages_created"] == 9 + stats["acknowledged"], stats
    print(f"Redis outage: 8 commands answered in {down_for:.1f}s while down; {fallbacks:g} fallbacks; "
          f"shared again after each start")


async def _bot_id(sim: SimulatorProc) -> str:
    status, me = await asyncio.to_thread(bot_api, sim, "GET", "/api/v10/users/@me")
    assert status == 200, me
    return str(me["id"])
