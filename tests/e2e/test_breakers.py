"""Circuit breakers end to end: PostgreSQL and Redis stopped for real under a running cluster.

The bot (an in-process ``ClusterBot`` on the real simulator) reaches PostgreSQL through a TCP proxy
the test owns (:class:`~tests.support.PgProxy`: stopped, it refuses connections like a stopped
server, and nobody else's database is touched) and Redis through a ``redis-server`` of the test's
own, killed with SIGKILL. While PostgreSQL is down, a command that needs it answers at once with
``E6003`` naming the database; ``/ping`` keeps answering; ``/health`` names the open breakers.
Once both are back the breakers probe, close, and the same command works again.

Each refused command is asked by a different member: a refused command counts against its user's
refusal throttle, and this test is about breakers, not about that.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from innkeeper.breakers import BreakerState
from tests.e2e.commands import CommandBotFactory, answer_text, content_of, load_world, slash, sub
from tests.procs import SimulatorProc
from tests.support import PgProxy, PrivateRedis, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
async def pg_proxy(migrated_db: str) -> AsyncIterator[PgProxy]:
    proxy = PgProxy(migrated_db)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
        proxy.reserved.close()


async def test_postgres_and_redis_down_for_real(sim: SimulatorProc, command_bot: CommandBotFactory,
                                                pg_proxy: PgProxy, private_redis: PrivateRedis) -> None:
    private_redis.start()
    world = await load_world(sim)
    bot = await command_bot(extra={"DATABASE_URL": pg_proxy.url, "REDIS_URL": private_redis.url,
                                   "INNKEEPER_BREAKER_THRESHOLD": "2", "INNKEEPER_BREAKER_OPEN": "1",
                                   "INNKEEPER_BREAKER_MAX_OPEN": "2"})
    breakers = bot.deps.breakers
    assert breakers is not None
    users = itertools.cycle(world.members)  # refusals are throttled per user: spread them

    async def reminders() -> tuple[str, float]:
        report = await slash(sim, world, next(users), "reminders", sub("list"))
        return content_of(report), float(report["latency_ms"])

    text, _ = await reminders()
    assert "(E" not in text, text  # an ordinary answer

    # --- PostgreSQL goes away -------------------------------------------------------------------------
    await pg_proxy.stop()

    async def told_database_is_down() -> tuple[str, float] | None:
        answer, latency = await reminders()
        return (answer, latency) if "(E6003)" in answer else None

    answer, _ = await wait_for(told_database_is_down, timeout=30, message="E6003 for /reminders list")
    assert answer.startswith("The database is unreachable right now") and "Try again in about" in answer
    assert breakers["postgres"].state is not BreakerState.CLOSED
    # while it is open the answer is immediate (no connection attempt, no retry)
    answer, latency = await reminders()
    if breakers["postgres"].refuses():  # not in the instant a probe is due
        assert "(E6003)" in answer and latency < 1000, (answer, latency)
    pong = await slash(sim, world, next(users), "ping")
    assert content_of(pong).startswith("Pong!")  # commands that don't need the database keep working

    # --- Redis goes away too --------------------------------------------------------------------------
    private_redis.kill()
    await wait_for(lambda: breakers["redis"].state is not BreakerState.CLOSED, timeout=30,
                   message="the redis breaker opening (heartbeats, throttle and limiter fail)")
    pong = await slash(sim, world, next(users), "ping")
    assert content_of(pong).startswith("Pong!")
    health = await answer_text(sim, await slash(sim, world, next(users), "health"))
    assert health.startswith("**Degraded**") and "database: unavailable" in health
    assert "postgres " in health and "redis " in health, health

    # --- both come back: the breakers probe and close -------------------------------------------------
    await pg_proxy.start()
    private_redis.start()

    async def works_again() -> str | None:
        answer, _ = await reminders()
        return answer if "(E6003)" not in answer and "(E4001)" not in answer else None

    await wait_for(works_again, timeout=30, message="/reminders list working again")
    await wait_for(lambda: not breakers.down(), timeout=30, message="every breaker closed")
    health = await answer_text(sim, await slash(sim, world, next(users), "health"))
    assert health.startswith("**Healthy**") and "circuit breakers: all closed" in health

