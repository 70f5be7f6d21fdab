"""The guild configuration store: shared-cache path, parse-once, invalidation, circuit breaker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from innkeeper.errors import DatabaseError, ErrorCode, IPCError
from shard.pipeline import store as store_mod
from shard.pipeline.config import GuildConfig, Override
from shard.pipeline.levels import Level
from shard.pipeline.store import CACHE_NAMESPACE, GuildConfigStore


class FakeCache:
    connected = True

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}
        self.deleted: list[tuple[str, str]] = []
        self.fail = False

    async def get_or_load(self, namespace: str, key: str | int, loader: Callable[[], Awaitable[Any]], *,
                          ttl: float | None = None) -> Any:
        if self.fail:
            raise IPCError("down", code=ErrorCode.REDIS_UNAVAILABLE)
        k = (namespace, str(key))
        if k not in self.values:
            self.values[k] = await loader()
        return self.values[k]

    async def delete(self, namespace: str, *keys: str | int) -> None:
        for key in keys:
            self.values.pop((namespace, str(key)), None)
            self.deleted.append((namespace, str(key)))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    async def fake_load(db: Any, guild_id: int) -> GuildConfig:
        calls.append(guild_id)
        if guild_id == 666:
            raise DatabaseError("down", code=ErrorCode.DB_UNAVAILABLE)
        return GuildConfig(guild_id, prefix="?", features={"stats": False}, role_levels={5: Level.MOD},
                           overrides={"ping": Override(Level.MOD, True)})

    monkeypatch.setattr(store_mod, "load_guild_config", fake_load)
    return calls


async def test_shared_cache_path_parses_each_value_once(loads: list[int]) -> None:
    cache = FakeCache()
    store = GuildConfigStore(None, shared=cache)  # type: ignore[arg-type]
    first = await store.get(1)
    assert first.prefix == "?" and first.role_levels == {5: Level.MOD} and not first.feature_enabled("stats")
    assert await store.get(1) is first  # the same cached value is not parsed again
    assert loads == [1]
    await store.invalidate(1)
    assert cache.deleted == [(CACHE_NAMESPACE, "1")]
    assert (await store.get(1)) == first and loads == [1, 1]


async def test_a_failing_cache_falls_back_to_the_database(loads: list[int]) -> None:
    cache = FakeCache()
    cache.fail = True
    store = GuildConfigStore(None, shared=cache)  # type: ignore[arg-type]
    assert (await store.get(2)).prefix == "?"
    assert loads == [2]


async def test_a_corrupt_cached_value_is_rebuilt(loads: list[int]) -> None:
    cache = FakeCache()
    cache.values[(CACHE_NAMESPACE, "3")] = {"not": "a config"}
    store = GuildConfigStore(None, shared=cache)  # type: ignore[arg-type]
    assert (await store.get(3)).guild_id == 3
    assert (CACHE_NAMESPACE, "3") in cache.deleted


async def test_local_only_store_expires(loads: list[int]) -> None:
    clock = Clock()
    store = GuildConfigStore(None, ttl=10, clock=clock)  # type: ignore[arg-type]
    await store.get(4)
    await store.get(4)
    clock.now = 11
    await store.get(4)
    assert loads == [4, 4]


async def test_before_the_shared_cache_connects_copies_are_short_lived_and_writes_still_reach_redis(
        loads: list[int]) -> None:
    clock = Clock()
    cache = FakeCache()
    cache.connected = False  # Redis was down at start-up: other clusters' invalidations cannot reach us
    store = GuildConfigStore(None, shared=cache, ttl=300, standalone_ttl=5, clock=clock)  # type: ignore[arg-type]
    await store.get(5)
    clock.now = 4
    await store.get(5)
    assert loads == [5]
    clock.now = 6  # a change made on another cluster shows after seconds, not after the 5-minute TTL
    await store.get(5)
    assert loads == [5, 5]
    await store.invalidate(5)  # Redis may still hold a copy from before: it is invalidated all the same
    assert cache.deleted == [(CACHE_NAMESPACE, "5")]


async def test_the_circuit_breaker_fails_fast_then_retries(loads: list[int]) -> None:
    clock = Clock()
    store = GuildConfigStore(None, clock=clock, down_cooldown=5)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(DatabaseError) as info:
            await store.get(666)
        assert info.value.code is ErrorCode.DB_UNAVAILABLE
    assert loads == [666]  # one real attempt, then fast failures
    clock.now = 6
    with pytest.raises(DatabaseError):
        await store.get(666)
    assert loads == [666, 666]


def test_wire_round_trip() -> None:
    cfg = GuildConfig(9, prefix="$", features={"aliases": False}, log_channel_id=7, automod_level=2,
                      role_levels={1: Level.ADMIN}, overrides={"remind": Override(None, False)})
    assert GuildConfig.from_wire(cfg.to_wire()) == cfg
    with pytest.raises((KeyError, TypeError, ValueError)):
        GuildConfig.from_wire({"g": 1})


async def test_the_last_known_configuration_outlives_a_database_outage(loads: list[int],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A guild's overrides stay in force while PostgreSQL is down, through the shared cache and without it."""
    down = False
    real_load = store_mod.load_guild_config

    async def flaky(db: Any, guild_id: int) -> GuildConfig:
        if down:
            raise DatabaseError("down", code=ErrorCode.DB_UNAVAILABLE)
        return await real_load(db, guild_id)

    monkeypatch.setattr(store_mod, "load_guild_config", flaky)
    clock = Clock()
    cache = FakeCache()
    for store in (GuildConfigStore(None, shared=cache, clock=clock),  # type: ignore[arg-type]
                  GuildConfigStore(None, ttl=10, clock=clock)):  # type: ignore[arg-type]
        down = False
        cache.values.clear()
        known = await store.get(7)
        assert known.override("ping") == Override(Level.MOD, True)
        down = True
        cache.values.clear()  # the cached entry expired...
        clock.now += 60  # ...here too, and the circuit breaker is closed
        assert await store.get(7) == known  # ...and the last known configuration answers
        with pytest.raises(DatabaseError):
            await store.get(8)  # a guild never read has none
        await store.invalidate(7)  # a write makes the last known configuration wrong: forget it
        with pytest.raises(DatabaseError):
            await store.get(7)
        clock.now += 60


async def test_the_last_known_configurations_are_bounded(loads: list[int]) -> None:
    store = GuildConfigStore(None, ttl=10, max_entries=2)  # type: ignore[arg-type]
    for guild in (1, 2, 3):
        await store.get(guild)
    assert sorted(store._known) == [2, 3]
