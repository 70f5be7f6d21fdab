"""Lean parsing: MESSAGE_CREATEs that cannot invoke a command are counted and never parsed, exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
import redis.asyncio as aioredis
from discord.ext import commands

from db import guilds as db_guilds
from db.pool import Database
from db.testing import migrated
from ipc.cache import SharedCache
from ipc.keys import Keys
from shard.lean_messages import LeanMessages
from shard.pipeline.store import GuildConfigStore
from tests.support import ipc_signer

pytestmark = pytest.mark.integration

GUILD, OTHER, CHANNEL, BOT_ID = 424242, 434343, 555, 99


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        yield database


@pytest.fixture
async def store(db: Database, redis_url: str, redis_prefix: str) -> AsyncIterator[GuildConfigStore]:
    client = aioredis.from_url(redis_url)
    cache = SharedCache(client, Keys(redis_prefix), signer=ipc_signer())
    await cache.start()
    try:
        yield GuildConfigStore(db, shared=cache)
    finally:
        await cache.stop()
        await client.aclose()


def _message(content: str, guild_id: int | None = GUILD, *, bot: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"id": "1001", "channel_id": str(CHANNEL), "content": content,
                            "author": {"id": "7", "username": "u", "discriminator": "0", "bot": bot}}
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
    return data


async def test_only_messages_that_could_invoke_a_command_need_parsing(db: Database, store: GuildConfigStore) -> None:
    await db_guilds.set_prefix(db, GUILD, "?")
    lean = LeanMessages("!", store)
    # Nothing cached yet: only a load could tell, so the message takes discord.py's full path.
    assert lean.needed(_message("hello there"))
    await store.get(GUILD)
    await store.get(OTHER)  # no settings row: the default prefix
    assert not lean.needed(_message("hello there"))
    assert not lean.needed(_message("!ping"))  # the default prefix is not this guild's
    assert lean.needed(_message("?ping"))
    assert lean.needed(_message("!ping", OTHER)) and not lean.needed(_message("?ping", OTHER))
    assert lean.needed(_message(f"<@{BOT_ID}> ping"))  # a mention may be the bot's
    assert not lean.needed(_message(""))  # attachments only
    assert not lean.needed(_message("?ping", bot=True))  # commands never run for bots
    assert lean.needed(_message("!ping", None)) and not lean.needed(_message("hi", None))  # DMs: the default
    # A change of prefix drops the local copy: the next message takes the full path again.
    await db_guilds.set_prefix(db, GUILD, "$")
    await store.invalidate(GUILD)
    assert lean.needed(_message("hello there"))
    await store.get(GUILD)
    assert lean.needed(_message("$ping")) and not lean.needed(_message("?ping"))


async def test_the_filter_wraps_discord_py_and_keeps_the_channel_current(db: Database,
                                                                       store: GuildConfigStore) -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default())
    parsed: list[dict[str, Any]] = []
    bot._connection.parsers["MESSAGE_CREATE"] = parsed.append
    lean = LeanMessages("!", store)
    lean.install(bot)
    await store.get(GUILD)
    parse = bot._connection.parsers["MESSAGE_CREATE"]
    parse(_message("just chat"))
    parse(_message("!ping"))
    assert [d["content"] for d in parsed] == ["!ping"] and lean.skipped == 1


async def test_a_burst_of_first_messages_leaves_every_guild_known(db: Database, store: GuildConfigStore) -> None:
    """Loads started together (a cold cluster's first messages) all end up in the local layer."""
    import asyncio

    guilds = list(range(1000, 1400))
    await asyncio.gather(*(store.get(g) for g in guilds for _ in range(3)))
    assert sum(store.cached_prefix(g)[0] for g in guilds) == len(guilds)


async def test_prefetch_caches_many_guilds_in_three_queries_and_matches_one_by_one_loads(
        db: Database, store: GuildConfigStore) -> None:
    from prometheus_client import REGISTRY

    from db import permissions as db_permissions
    from shard.pipeline.store import load_guild_config

    guilds = list(range(700_001, 701_201))  # 1,200 guilds: three batches of 500
    await db_guilds.set_prefix(db, guilds[3], "?")
    await db_guilds.set_automod_level(db, guilds[600], 2)
    await db_permissions.set_role_level(db, guilds[1100], 55, 2)
    await db_permissions.set_command_override(db, guilds[1100], "ping", min_level=None, enabled=False)
    assert store.shared is not None
    await store.shared.wait_connected(5)  # type: ignore[attr-defined]
    await store.get(guilds[0])  # one already cached: not fetched again
    lean = LeanMessages("!", store)

    def queries(name: str) -> float:
        return REGISTRY.get_sample_value("innkeeper_db_query_seconds_count", {"query": name}) or 0.0

    def prefetched() -> float:
        return REGISTRY.get_sample_value("innkeeper_cache_requests_total",
                                         {"namespace": "guildcfg", "result": "prefetched"}) or 0.0

    before = queries("guild_settings.get_many"), queries("guild_settings.get"), prefetched()
    assert await store.prefetch(guilds) == len(guilds) - 1
    assert prefetched() == before[2] + len(guilds) - 1
    assert queries("guild_settings.get_many") == before[0] + 3 and queries("guild_settings.get") == before[1]
    for g in guilds:  # every guild is known to the lean filter now, without a load
        assert lean.needed(_message("hello", g)) is False
        assert lean.needed(_message("?ping" if g == guilds[3] else "!ping", g)) is True
    for g in (guilds[3], guilds[600], guilds[1100], guilds[7]):
        assert await store.get(g) == await load_guild_config(db, g)
    assert await store.prefetch(guilds) == 0  # all cached: nothing to do, no query
    assert queries("guild_settings.get_many") == before[0] + 3


async def test_prefetch_never_caches_what_a_write_invalidated_meanwhile(db: Database,
                                                                      store: GuildConfigStore) -> None:
    shared = store.shared
    assert shared is not None
    await shared.wait_connected(5)  # type: ignore[attr-defined]
    guild = 711_111

    async def load_then_write(keys: list[str]) -> dict[str, Any]:
        loaded = {k: {"stale": True} for k in keys}  # what the database said before the write
        await db_guilds.set_prefix(db, guild, "$")
        await store.invalidate(guild)  # the write's invalidation lands before the prefetch stores
        return loaded

    assert await shared.prefetch("guildcfg", [guild], load_then_write) == 0  # type: ignore[attr-defined]
    assert (await store.get(guild)).prefix == "$"


class Recorder:
    """A per-message inspector that records what the filter hands it."""

    def __init__(self) -> None:
        self.inspected: list[tuple[str, int]] = []
        self.deferred: list[str] = []

    def inspect(self, data: dict[str, Any], cfg: Any) -> None:
        self.inspected.append((data["content"], cfg.automod_level))

    def defer(self, data: dict[str, Any]) -> None:
        self.deferred.append(data["content"])


async def test_automod_sees_each_guild_message_once_and_off_guilds_cost_nothing(db: Database,
                                                                             store: GuildConfigStore) -> None:
    await db_guilds.set_automod_level(db, GUILD, 3)
    automod = Recorder()
    lean = LeanMessages("!", store, automod)
    # not cached: the message takes the full path, and automod gets it when that path loads the configuration
    assert lean.route(_message("hello there")) and automod.deferred == ["hello there"] and automod.inspected == []
    await store.get(GUILD)
    await store.get(OTHER)  # automod off
    assert store.cached_automod_level(GUILD) == (True, 3) and store.cached_automod_level(OTHER) == (True, 0)
    assert not lean.route(_message("just chat"))
    assert lean.route(_message("!ping"))
    assert lean.route(_message(f"<@{BOT_ID}> ping"))
    assert not lean.route(_message("!ping", bot=True))  # bots: neither commands nor automod
    assert not lean.route(_message(""))  # no text: nothing to moderate
    assert automod.inspected == [("just chat", 3), ("!ping", 3), (f"<@{BOT_ID}> ping", 3)]
    assert not lean.route(_message("chat elsewhere", OTHER)) and lean.route(_message("!ping", OTHER))
    assert lean.route(_message("!ping", None))  # DMs
    assert len(automod.inspected) == 3 and automod.deferred == ["hello there"]
    # needed() only decides
    assert not lean.needed(_message("more chat")) and len(automod.inspected) == 3
    assert store.cached_automod_level(999) == (False, 0)
