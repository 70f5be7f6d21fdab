"""Parking: messages of a guild whose configuration is unknown wait as raw payloads, boundedly and in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from innkeeper.errors import DatabaseError, ErrorCode
from shard.lean_messages import LeanMessages
from shard.pipeline.config import GuildConfig

GUILDS = (1001, 1002, 1003, 1004)
PREFIXES = {1001: "?", 1002: None, 1003: "$", 1004: "?"}  # None: the default prefix "!"


class _Store:
    """The two methods of ``GuildConfigStore`` the filter uses (automod off); each load ends when the test says."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.loaded: set[int] = set()
        self.loads = {g: 0 for g in GUILDS}
        self.gates = {g: asyncio.Event() for g in GUILDS}
        self.failing = failing
        self.inflight = self.most_inflight = 0

    def cached_config(self, guild_id: int) -> GuildConfig | None:
        return GuildConfig(guild_id, prefix=PREFIXES[guild_id]) if guild_id in self.loaded else None

    async def get(self, guild_id: int) -> None:
        self.loads[guild_id] += 1
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        try:
            await self.gates[guild_id].wait()
            if guild_id in self.failing:
                raise DatabaseError("down", code=ErrorCode.DB_UNAVAILABLE)
            self.loaded.add(guild_id)
        finally:
            self.inflight -= 1


class _State:
    """discord.py's connection state, as far as the filter touches it: the parser, and the channel lookup."""

    def __init__(self) -> None:
        self.decided: list[tuple[str, int]] = []  # ("parse" | "skip", message id), in decision order
        self.parsers = {"MESSAGE_CREATE": lambda data: self.decided.append(("parse", int(data["id"])))}

    def _get_guild(self, guild_id: int) -> _Guild:
        return _Guild(self.decided)


class _Guild:
    def __init__(self, decided: list[tuple[str, int]]) -> None:
        self.channel = _Channel(decided)

    def get_channel_or_thread(self, channel_id: int) -> _Channel:
        return self.channel


class _Channel:
    """A skipped message only moves its channel's ``last_message_id``: that is how the test sees a skip."""

    def __init__(self, decided: list[tuple[str, int]]) -> None:
        self.decided = decided

    @property
    def last_message_id(self) -> int | None:
        return None

    @last_message_id.setter
    def last_message_id(self, value: int) -> None:
        self.decided.append(("skip", value))


class _Bot:
    def __init__(self) -> None:
        self._connection = _State()


def _message(mid: int, guild: int, command: bool) -> dict[str, Any]:
    prefix = PREFIXES[guild] or "!"
    return {"id": str(mid), "guild_id": str(guild), "channel_id": "5", "author": {"id": "7", "bot": False},
            "content": f"{prefix}ping" if command else "just chat"}


async def _settle(lean: LeanMessages) -> None:
    for _ in range(50):  # each load needs a few loop turns to end and release its guild
        await asyncio.sleep(0)


steps = st.lists(st.one_of(
    st.tuples(st.just("msg"), st.sampled_from(GUILDS), st.booleans()),
    st.tuples(st.just("load"), st.sampled_from(GUILDS), st.just(False)),
    st.tuples(st.just("turn"), st.just(0), st.just(False)),
), max_size=120)


@settings(max_examples=200, deadline=None)
@given(steps=steps, max_parked=st.integers(min_value=0, max_value=12), max_loads=st.integers(min_value=1, max_value=3),
       failing=st.frozensets(st.sampled_from(GUILDS), max_size=2))
def test_parking_stays_bounded_and_decides_every_message_once_in_order(
        steps: list[tuple[str, int, bool]], max_parked: int, max_loads: int, failing: frozenset[int]) -> None:
    async def run() -> None:
        store, bot = _Store(failing), _Bot()
        lean = LeanMessages("!", store, max_parked=max_parked, max_loads=max_loads)  # type: ignore[arg-type]
        lean.install(bot)  # type: ignore[arg-type]
        state = bot._connection
        sent: dict[int, list[int]] = {g: [] for g in GUILDS}
        commands: set[int] = set()
        for mid, (kind, guild, command) in enumerate(steps):
            if kind == "msg":
                state.parsers["MESSAGE_CREATE"](_message(mid, guild, command))
                sent[guild].append(mid)
                if command:
                    commands.add(mid)
            elif kind == "load":
                store.gates[guild].set()
            else:
                await asyncio.sleep(0)
            assert 0 <= lean.parked <= max_parked and lean.parked == sum(len(v) for v in lean._parked.values())
            assert lean.queue.full == (max_parked > 0 and lean.parked == max_parked)
            assert store.most_inflight <= max_loads
        for gate in store.gates.values():
            gate.set()
        await _settle(lean)
        assert lean.parked == 0
        decided = [mid for _, mid in state.decided]
        assert sorted(decided) == sorted(m for ms in sent.values() for m in ms)  # each once, none lost
        for mids in sent.values():
            assert [m for m in decided if m in set(mids)] == mids  # a guild's messages keep their order
        parsed = {mid for verdict, mid in state.decided if verdict == "parse"}
        assert commands <= parsed  # every command reaches discord.py
        for verdict, mid in state.decided:  # a skip is only ever a known guild's plain chat
            assert verdict == "parse" or mid not in commands
        assert all(n <= max(1, len(sent[g])) for g, n in store.loads.items())  # one load per parked run, at most
        await lean.stop()

    asyncio.run(run())


async def test_a_parked_guild_costs_one_load_and_its_chat_is_never_parsed() -> None:
    store, bot = _Store(), _Bot()
    lean = LeanMessages("!", store, max_parked=100)  # type: ignore[arg-type]
    lean.install(bot)  # type: ignore[arg-type]
    parse = bot._connection.parsers["MESSAGE_CREATE"]
    for mid in range(10):
        parse(_message(mid, 1001, command=mid == 9))
    assert lean.parked == 10 and bot._connection.decided == []
    store.gates[1001].set()
    await _settle(lean)
    assert store.loads[1001] == 1
    assert bot._connection.decided == [*(("skip", m) for m in range(9)), ("parse", 9)] and lean.skipped == 9
    parse(_message(10, 1001, command=False))  # known now: decided at once
    assert lean.skipped == 10 and lean.parked == 0
    await lean.stop()


async def test_stopping_drops_what_waits() -> None:
    store, bot = _Store(), _Bot()
    lean = LeanMessages("!", store)  # type: ignore[arg-type]
    lean.install(bot)  # type: ignore[arg-type]
    bot._connection.parsers["MESSAGE_CREATE"](_message(1, 1002, command=True))
    assert lean.parked == 1
    await lean.stop()
    assert lean.parked == 0 and lean.queue.count == 0 and bot._connection.decided == []
    bot._connection.parsers["MESSAGE_CREATE"](_message(2, 1002, command=True))  # stopped: the full path
    assert bot._connection.decided == [("parse", 2)]


async def test_an_unexpected_load_failure_still_sends_the_parked_messages_on(caplog: pytest.LogCaptureFixture) -> None:
    class _Broken(_Store):
        async def get(self, guild_id: int) -> None:
            raise RuntimeError("a bug")

    store, bot = _Broken(), _Bot()
    lean = LeanMessages("!", store)  # type: ignore[arg-type]
    lean.install(bot)  # type: ignore[arg-type]
    bot._connection.parsers["MESSAGE_CREATE"](_message(1, 1004, command=False))
    await _settle(lean)
    assert bot._connection.decided == [("parse", 1)] and lean.parked == 0  # the full path, as without parking
    assert "configuration load failed" in caplog.text
    await lean.stop()


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError):
        LeanMessages("!", _Store(), max_parked=-1)  # type: ignore[arg-type]
