"""ScriptBatch against a real Redis: one pipeline per turn, answers and errors per call, NOSCRIPT, failures."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ipc.script_batch import BatchedScript, ScriptBatch
from tests.support import ReservedPort

pytestmark = pytest.mark.integration

#: INCR a key and return the new value with the call's tag: order and atomicity are visible.
INCR = BatchedScript("local n = redis.call('INCR', KEYS[1]) return {n, ARGV[1]}")
#: Fails for the one call whose ARGV says so.
MAYBE_FAIL = BatchedScript("if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to') end return 1")


async def test_one_turn_goes_in_one_pipeline_in_call_order(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    await redis.script_load(INCR.source)  # a fresh Redis has never seen it: NOSCRIPT is the next test's subject
    key = f"{redis_prefix}:n"
    futures = [batch.call(INCR, [key], [f"call{i}"]) for i in range(20)]
    trips = batch._round_trips._value.get()
    results = await asyncio.gather(*futures)
    assert [(n, tag.decode()) for n, tag in results] == [(i + 1, f"call{i}") for i in range(20)]
    assert batch._round_trips._value.get() - trips == 1
    await batch.close()


async def test_a_call_made_alone_leaves_at_once(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    for i in range(3):  # each awaited before the next: three round trips, none waits for company
        n, _ = await asyncio.wait_for(batch.call(INCR, [f"{redis_prefix}:alone"], ["x"]), 5)
        assert n == i + 1
    await batch.close()


async def test_each_call_gets_its_own_error(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    results = await asyncio.gather(*(batch.call(MAYBE_FAIL, [f"{redis_prefix}:k"], [arg])
                                     for arg in ("ok", "fail", "ok")), return_exceptions=True)
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ResponseError) and "asked to" in str(results[1])
    await batch.close()


async def test_scripts_flushed_from_redis_are_loaded_again(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    fresh = BatchedScript(f"return '{redis_prefix}'")  # a script Redis has never seen: NOSCRIPT first
    assert not (await redis.script_exists(fresh.sha))[0]
    results = await asyncio.gather(*(batch.call(fresh, [], []) for _ in range(3)),
                                   batch.call(INCR, [f"{redis_prefix}:n"], ["a"]))
    assert results[:3] == [redis_prefix.encode()] * 3
    assert results[3][0] == 1  # the call that did not need loading ran once, not twice
    await batch.close()


async def test_a_lone_call_of_a_flushed_script_is_loaded_again(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    fresh = BatchedScript(f"return 'alone {redis_prefix}'")
    assert await batch.call(fresh, [], []) == f"alone {redis_prefix}".encode()
    assert (await redis.script_exists(fresh.sha))[0]
    await batch.close()


async def test_more_calls_than_rounds_all_answered(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test", max_batch=3, max_rounds=2)
    key = f"{redis_prefix}:many"
    results = await asyncio.gather(*(batch.call(INCR, [key], [str(i)]) for i in range(50)))
    assert sorted(n for n, _ in results) == list(range(1, 51))
    assert await redis.get(key) == b"50"
    await batch.close()


async def test_a_caller_that_stopped_waiting_is_not_sent(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    key = f"{redis_prefix}:cancelled"
    gone = batch.call(INCR, [key], ["gone"])
    gone.cancel()
    kept = await batch.call(INCR, [key], ["kept"])
    assert kept[0] == 1  # only the call still awaited reached Redis
    await batch.close()


async def test_a_failed_round_trip_fails_every_call_in_it(redis_prefix: str) -> None:
    with ReservedPort() as closed:  # nothing listens there
        dead = aioredis.from_url(f"redis://127.0.0.1:{closed.port}/0", socket_connect_timeout=0.1, retry=None)
        batch = ScriptBatch(dead, name="test")
        try:
            results = await asyncio.gather(*(batch.call(INCR, [f"{redis_prefix}:x"], ["a"]) for _ in range(3)),
                                           return_exceptions=True)
            assert all(isinstance(r, RedisConnectionError) for r in results), results  # the same error for each
        finally:
            await batch.close()
            await dead.aclose()


async def test_close_fails_what_waits_and_refuses_new_calls(redis: aioredis.Redis, redis_prefix: str) -> None:
    batch = ScriptBatch(redis, name="test")
    waiting = batch.call(INCR, [f"{redis_prefix}:c"], ["a"])
    await batch.close()
    with pytest.raises(ConnectionError):
        await waiting
    with pytest.raises(ConnectionError):
        batch.call(INCR, [f"{redis_prefix}:c"], ["b"])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        ScriptBatch(None, name="test", max_batch=0)  # type: ignore[arg-type]
