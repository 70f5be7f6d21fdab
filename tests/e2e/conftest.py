"""Fixtures for end-to-end tests: a real simulator process and in-process or subprocess bots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from db.migrate import migrate
from innkeeper.settings import Settings
from shard.assembly import build_cluster
from shard.bot import ClusterBot
from shard.context import ClusterContext
from tests.e2e.commands import BotFactory, CommandBotFactory, start_command_bot
from tests.procs import SimulatorProc, cluster_env, start_simulator
from tests.support import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    """A simulator with 50 guilds on 2 shards, a scaled identify window and room for many replies.

    The command tests run dozens of prefix commands in one channel: at Discord's 5 messages per
    5 s per channel, most of their time went to the bot waiting for that bucket. The REST limits
    have tests of their own, on simulators of their own.
    """
    with start_simulator(tmp_path / "logs", guilds=50, shards=2, identify_window=0.2,
                         extra_args=("--message-limit", "100")) as proc:
        yield proc


@pytest.fixture
async def migrated_db(database_url: str) -> str:
    """This test's database (``database_url``), migrated to the current schema."""
    await migrate(database_url)
    return database_url


@pytest.fixture
async def start_bot(redis_url: str, redis_prefix: str, migrated_db: str) -> AsyncIterator[BotFactory]:
    """Start in-process ``ClusterBot``s against a simulator and wait until every shard is READY.

    Each bot uses this test's Redis prefix and migrated database (``DATABASE_URL`` in ``env``
    overrides it) and paces its identifies to the simulator's window.
    """
    bots: list[tuple[ClusterBot, ClusterContext, asyncio.Task[None]]] = []

    async def factory(sim: SimulatorProc, *, shard_ids: list[int] | None = None, shard_count: int | None = None,
                      cluster_id: int = 0, env: dict[str, str] | None = None, timeout: float = 60.0,
                      max_concurrency: int | None = None) -> ClusterBot:
        settings = Settings.from_env(cluster_env(sim, redis_prefix, redis_url=redis_url, database_url=migrated_db,
                                                 extra=env))
        ctx = ClusterContext.create(settings, cluster_id=cluster_id, shard_ids=shard_ids, shard_count=shard_count,
                                    max_concurrency=max_concurrency)
        bot = build_cluster(ctx)
        task = asyncio.create_task(bot.start(settings.require_token()))
        bots.append((bot, ctx, task))

        def ready() -> bool:
            if task.done():
                task.result()  # surface a login or gateway failure
            return bot.is_ready()
        await wait_for(ready, timeout=timeout, message="every shard READY")
        return bot

    yield factory

    async def close(bot: ClusterBot, ctx: ClusterContext, task: asyncio.Task[None]) -> None:
        if not bot.is_closed():
            await bot.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=10)
        await ctx.aclose()

    await asyncio.gather(*(close(bot, ctx, task) for bot, ctx, task in bots))  # independent: side by side


@pytest.fixture
def command_bot(sim: SimulatorProc, start_bot: BotFactory, migrated_db: str) -> CommandBotFactory:
    """The one way a command test starts its bot: on this test's simulator and migrated database.

    ``await command_bot(owners=(...), extra={...}, cluster_id=0)`` returns the bot once its shards
    are READY and its database is connected.
    """
    async def start(*, owners: tuple[str, ...] = (), extra: dict[str, str] | None = None,
                    cluster_id: int = 0) -> ClusterBot:
        return await start_command_bot(start_bot, sim, migrated_db, owners=owners, extra=extra,
                                       cluster_id=cluster_id)
    return start
