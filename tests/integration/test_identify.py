"""The identify queue against a real Redis: rate per bucket, order, floor, crashed waiters, budget."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from ipc.identify import IdentifyBudgetExhausted, IdentifyQueue, read_budget, store_budget
from ipc.keys import Keys
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def _queued(client: aioredis.Redis, keys: Keys) -> bool:
    return bool(await client.zrange(keys.identify_queue(0), 0, -1) == [b"0"])


async def _no_budget(client: aioredis.Redis, keys: Keys) -> bool:
    return await read_budget(client, keys) is None


async def _cluster(redis_url: str, keys: Keys, shard_ids: list[int], mc: int, window: float,
                   grants: list[tuple[float, int]]) -> None:
    """One fake cluster: like discord.py, it identifies its shards one after the other."""
    client = aioredis.from_url(redis_url)
    try:
        queue = IdentifyQueue(client, keys, max_concurrency=mc, window_s=window, margin_s=0.005)
        for shard in shard_ids:
            ticket = await queue.acquire(shard)
            grants.append((time.monotonic(), shard))  # "IDENTIFY sent"
            await queue.confirm(ticket)
    finally:
        await client.aclose()


async def test_sixteen_shards_four_clusters_at_the_floor(redis_url: str, redis_prefix: str) -> None:
    mc, window, shards, clusters = 4, 0.3, 16, 4
    keys = Keys(redis_prefix)
    grants: list[tuple[float, int]] = []
    per = shards // clusters
    # Every bucket is busy for a moment (a previous round), and the clusters start in reverse
    # order: the queue, not start order, decides who goes first once the buckets free up.
    async with aioredis.from_url(redis_url) as client:
        for bucket in range(mc):
            await client.set(keys.identify_bucket(bucket), "previous", px=300)
    await asyncio.gather(*(
        _cluster(redis_url, keys, list(range(c * per, (c + 1) * per)), mc, window, grants)
        for c in reversed(range(clusters))
    ))
    assert sorted(s for _, s in grants) == list(range(shards))
    by_bucket: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for t, s in sorted(grants):
        by_bucket[s % mc].append((t, s))
    for bucket, seq in by_bucket.items():
        # At most one identify per bucket per window, and the next one as soon as the window is over:
        # a gap of two windows would be a window lost (the bounds are ratios of the window, not a few
        # milliseconds, so that a loaded machine does not fail them) …
        gaps = [b[0] - a[0] for a, b in zip(seq, seq[1:], strict=False)]
        assert all(window - 0.002 <= g < 1.5 * window for g in gaps), (bucket, gaps)
        # … served lowest shard id first.
        assert [s for _, s in seq] == sorted(s for _, s in seq), (bucket, seq)
    # Every bucket served its four shards in four consecutive windows: no window lost overall.
    floor = (math.ceil(shards / mc) - 1) * window
    elapsed = max(t for t, _ in grants) - min(t for t, _ in grants)
    assert floor - 0.002 <= elapsed < floor + window, f"elapsed {elapsed:.3f}s vs floor {floor:.3f}s"


async def test_waiters_in_separate_processes_keep_the_rate(redis_url: str, redis_prefix: str) -> None:
    """Four real processes, as in production; grant times come from one Redis clock."""
    import sys

    code = (
        "import asyncio, sys, redis.asyncio as r\n"
        "from ipc.identify import IdentifyQueue\nfrom ipc.keys import Keys\n"
        "async def main():\n"
        "    c = r.from_url(sys.argv[1])\n"
        "    q = IdentifyQueue(c, Keys(sys.argv[2]), max_concurrency=2, window_s=0.2, margin_s=0.005)\n"
        "    for s in map(int, sys.argv[3].split(',')):\n"
        "        t = await q.acquire(s); sec, us = await c.time(); await q.confirm(t)\n"
        "        print(s, sec * 1_000_000 + us, flush=True)\n"
        "    await c.aclose()\n"
        "asyncio.run(main())\n"
    )
    groups = ["0,1", "2,3", "4,5", "6,7"]
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, redis_url, redis_prefix, g,
                                                  stdout=asyncio.subprocess.PIPE) for g in groups]
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    assert all(p.returncode == 0 for p in procs)
    lines = [line.split() for out, _ in outs for line in out.decode().splitlines()]
    grants = sorted((int(t), int(s)) for s, t in lines)
    assert sorted(s for _, s in grants) == list(range(8))
    for bucket in (0, 1):
        times = [t for t, s in grants if s % 2 == bucket]
        assert all(b - a >= 200_000 - 2_000 for a, b in zip(times, times[1:], strict=False)), times


async def test_a_crashed_waiter_is_dropped_after_its_lease(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    queue = IdentifyQueue(redis, keys, max_concurrency=1, window_s=0.1)
    crashed = IdentifyQueue(redis, keys, max_concurrency=1, window_s=0.1, lease_s=0.3)
    await queue.confirm(await queue.acquire(5))  # holds the bucket for one window
    granted, _, _ = await crashed.try_acquire(0)  # shard 0 queues up, then its process "dies"
    assert not granted
    started = time.monotonic()
    ticket = await queue.acquire(1)  # waits behind shard 0 until its lease runs out
    waited = time.monotonic() - started
    assert ticket.shard_id == 1
    assert 0.25 <= waited < 5 * 0.3, waited  # the lease (0.3 s), not the queue's patience


async def test_cancelled_waiter_leaves_the_queue(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    queue = IdentifyQueue(redis, keys, max_concurrency=1, window_s=0.3)
    await queue.acquire(9)
    task = asyncio.create_task(queue.acquire(0))
    await wait_for(lambda: _queued(redis, keys), message="shard 0 queued")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.zcard(keys.identify_queue(0)) == 0


async def test_budget_guard_refuses_at_the_reserve(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    queue = IdentifyQueue(redis, keys, max_concurrency=4, window_s=0.05, reserve=3)
    assert await read_budget(redis, keys) is None
    await store_budget(redis, keys, {"total": 1000, "remaining": 4, "reset_after": 60_000, "max_concurrency": 4})
    ticket = await queue.acquire(0)
    assert ticket.remaining == 3
    with pytest.raises(IdentifyBudgetExhausted) as info:
        await queue.acquire(1)
    assert info.value.code.value == "E2003"
    assert info.value.remaining == 3
    assert 55 < info.value.reset_in_s <= 60
    assert "identify budget exhausted" in str(info.value)
    assert await redis.zcard(keys.identify_queue(1)) == 0
    budget = await read_budget(redis, keys)
    assert budget is not None
    assert (budget.total, budget.remaining, budget.max_concurrency) == (1000, 3, 4)
    # Discord's fresh numbers replace ours, and identifying works again.
    await store_budget(redis, keys, {"total": 1000, "remaining": 999, "reset_after": 60_000})
    assert (await queue.acquire(1)).remaining == 998


async def test_budget_resets_when_discord_resets_it(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    queue = IdentifyQueue(redis, keys, max_concurrency=1, window_s=0.05, reserve=0)
    await store_budget(redis, keys, {"total": 1000, "remaining": 0, "reset_after": 150})
    with pytest.raises(IdentifyBudgetExhausted):
        await queue.acquire(0)
    # Once reset_after has passed the stored budget is gone, and identifying is allowed again.
    await wait_for(lambda: _no_budget(redis, keys), timeout=5, message="the budget to reset")
    assert (await queue.acquire(0)).remaining is None


async def test_malformed_budget_is_rejected(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    with pytest.raises(ValueError, match="session_start_limit"):
        await store_budget(redis, keys, {"total": "many"})


async def test_unconfirmed_identify_holds_the_bucket_longer(redis: aioredis.Redis, redis_prefix: str) -> None:
    """Without a READY (refused, connection lost, process died) the bucket stays held for the pending hold."""
    keys = Keys(redis_prefix)
    queue = IdentifyQueue(redis, keys, max_concurrency=1, window_s=0.2, margin_s=0.0)
    assert queue.pending_ms == 1200  # a window, plus max(window, 1 s) for the READY to come
    lock = keys.identify_bucket(0)
    before = time.monotonic()
    await queue.acquire(0)  # never confirmed
    ttl = await redis.pttl(lock)
    assert 1200 - _ms_since(before) - 2 <= ttl <= 1200  # the pending hold, less the time it took to ask
    asked = time.monotonic()
    ticket = await queue.acquire(1)  # waits out the pending hold
    assert ticket.waited_s >= 1.2 - (asked - before) - 0.005
    before = time.monotonic()
    await queue.confirm(ticket)
    ttl = await redis.pttl(lock)
    assert 200 - _ms_since(before) - 2 <= ttl <= 200  # confirmed: one window from now


async def test_confirm_rearms_its_own_lock_retakes_a_free_one_and_leaves_others(
        redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    queue = IdentifyQueue(redis, keys, max_concurrency=1, window_s=0.3)
    lock = keys.identify_bucket(0)
    ticket = await queue.acquire(4)
    before = time.monotonic()
    await queue.confirm(ticket)
    ttl = await redis.pttl(lock)  # read first: the time its round trip took counts in the bound below
    assert 300 - _ms_since(before) - 2 <= ttl <= 300 and await redis.get(lock) == b"4"
    # READY came after the pending hold ran out: the IDENTIFY was stamped no earlier than that,
    # so the bucket is taken again for a window from now.
    await redis.delete(lock)
    before = time.monotonic()
    await queue.confirm(ticket)
    ttl = await redis.pttl(lock)  # read first: the time its round trip took counts in the bound below
    assert 300 - _ms_since(before) - 2 <= ttl <= 300 and await redis.get(lock) == b"4"
    # … but a lock another shard holds by now is left alone.
    await redis.set(lock, "7", px=5000)
    await queue.confirm(ticket)
    assert await redis.get(lock) == b"7" and await redis.pttl(lock) > 4000


async def test_the_window_runs_from_the_acknowledgement(redis: aioredis.Redis, redis_prefix: str) -> None:
    """The next shard is granted one window after the READY, however late it came, and promptly."""
    keys = Keys(redis_prefix)
    window = 0.2
    queue = IdentifyQueue(redis, keys, max_concurrency=1, window_s=window)
    first = await queue.acquire(0)
    waiter = asyncio.create_task(queue.acquire(1))
    await wait_for(lambda: _queued_shard(redis, keys, b"1"), message="shard 1 queued")
    await asyncio.sleep(0.15)  # a slow READY: the receiver stamped the IDENTIFY late (the scenario, not a wait)
    acknowledged = time.monotonic()
    await queue.confirm(first)
    await waiter
    granted = time.monotonic()
    # a window after the READY, not after the IDENTIFY (that would be 0.05 s), and promptly (not two windows)
    assert window - 0.002 <= granted - acknowledged < 1.5 * window, granted - acknowledged


def _ms_since(start: float) -> float:
    return (time.monotonic() - start) * 1000


async def _queued_shard(client: aioredis.Redis, keys: Keys, shard: bytes) -> bool:
    return shard in await client.zrange(keys.identify_queue(0), 0, -1)


async def _stamped_run(redis_url: str, keys: Keys, *, on_ack: bool) -> list[int]:
    """Eight shards, two buckets, against a receiver that stamps every other round 80 ms late.

    The receiver is the simulator's own referee (``IdentifyLimiter``) on the real clock; it sends
    READY once it has stamped. Returns the shards it refused (identify violations).
    """
    from simulator.identify import IdentifyLimiter

    mc, window = 2, 0.15
    referee = IdentifyLimiter(mc, window)
    refused: list[int] = []
    client = aioredis.from_url(redis_url)
    queue = IdentifyQueue(client, keys, max_concurrency=mc, window_s=window, margin_s=0.005)

    async def receive(shard: int) -> None:
        await asyncio.sleep(0.08 if (shard // mc) % 2 == 0 else 0.0)  # a loaded receiver, in bursts
        if not referee.try_acquire(shard):
            refused.append(shard)

    async def shard_lane(shards: list[int]) -> None:
        for shard in shards:
            ticket = await queue.acquire(shard)
            delivery = asyncio.create_task(receive(shard))  # "IDENTIFY sent"
            if on_ack:
                await delivery  # READY: the receiver has stamped it
            await queue.confirm(ticket)
            await delivery

    try:
        await asyncio.gather(*(shard_lane(list(range(b, 8, mc))) for b in range(mc)))
    finally:
        await client.aclose()
    return refused


async def test_confirming_on_ready_keeps_a_lagging_receiver_free_of_violations(
        redis_url: str, redis_prefix: str) -> None:
    # Confirming when the IDENTIFY is sent trusts the receiver to stamp it on time: a 5 ms margin
    # cannot absorb an 80 ms lag, and the receiver refuses IDENTIFYs (what the e2e runs saw) …
    assert await _stamped_run(redis_url, Keys(redis_prefix + ":send"), on_ack=False)
    # … confirming on READY starts the next window after the stamp, whatever the lag: none refused.
    assert await _stamped_run(redis_url, Keys(redis_prefix + ":ack"), on_ack=True) == []


async def test_a_cluster_far_back_in_a_cold_start_waits_for_its_round(redis: aioredis.Redis,
                                                                     redis_url: str, redis_prefix: str) -> None:
    from ipc.identify import mark_cold_start
    from shard.cold_start import first_round, wait_for_round

    keys = Keys(redis_prefix)
    late = list(range(32, 48))  # max_concurrency 16: round 2
    assert first_round(late, 16) == 2 and first_round(list(range(16)), 16) == 0
    # no mark (one cluster restarting on its own): nobody waits
    assert await asyncio.to_thread(wait_for_round, redis_url, keys, late, 16, window_s=1.0, lead_s=1.6) == 0.0
    await mark_cold_start(redis, keys, ttl_s=60)
    assert 0 < await redis.pttl(keys.cold_start()) <= 60_000
    # the first round starts at once; round 2 of 1 s windows starts 0.5 s early: 1.5 s after the mark
    assert await asyncio.to_thread(wait_for_round, redis_url, keys, list(range(16)), 16, window_s=1.0,
                                   lead_s=0.5) == 0.0
    waited = await asyncio.to_thread(wait_for_round, redis_url, keys, late, 16, window_s=1.0, lead_s=0.5)
    assert 0.0 < waited <= 1.5
    # once the round is near (or past), it starts at once
    assert await asyncio.to_thread(wait_for_round, redis_url, keys, late, 16, window_s=1.0, lead_s=0.5) == 0.0
    # Redis unreachable: start at once, never block the cluster
    assert await asyncio.to_thread(wait_for_round, "redis://127.0.0.1:1/0", keys, late, 16, window_s=30.0) == 0.0


async def test_a_cluster_with_every_session_saved_starts_at_once_to_resume(redis: aioredis.Redis,
                                                                          redis_url: str, redis_prefix: str) -> None:
    from ipc.identify import mark_cold_start
    from ipc.sessions import SessionInfo, SessionStore
    from shard.cold_start import wait_for_round

    keys = Keys(redis_prefix)
    late = list(range(32, 48))  # round 2 of max_concurrency 16: it would wait ~2 windows
    await mark_cold_start(redis, keys, ttl_s=60)
    store = SessionStore(redis, keys)
    await store.save_many([SessionInfo(sid, 48, f"s{sid}", 7, "ws://x/gateway") for sid in late[:-1]])
    started = time.monotonic()
    # one shard without a session: that one identifies, so the cluster keeps its turn
    assert await asyncio.to_thread(wait_for_round, redis_url, keys, late, 16, window_s=0.6, lead_s=0.1) > 0
    await store.save(SessionInfo(late[-1], 48, "last", 7, "ws://x/gateway"))
    await mark_cold_start(redis, keys, ttl_s=60)
    assert await asyncio.to_thread(wait_for_round, redis_url, keys, late, 16, window_s=30.0) == 0.0
    assert await asyncio.to_thread(wait_for_round, redis_url, keys, late, 16, window_s=0.6, lead_s=0.1,
                                   resume=False) > 0  # resuming turned off: it waits its turn
    assert time.monotonic() - started < 10
