"""One bad event never ends a shard: discord.py's own parsers, fed a malformed event, behind the tracker's wrapper."""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord.ext import commands
from discord.gateway import DiscordWebSocket

from shard.bot import ClusterBot
from shard.event_guard import FAILED, FailureLog, event_failed, shard_of
from shard.read_gate import ReadGate
from shard.tracker import ShardTracker
from tests.support import ManualClock, wait_for

GUILD = (123457 << 22) + 7  # (GUILD >> 22) % 2 == 1: shard 1 of 2
CHANNEL = GUILD + 1
GUILD_CREATE: dict[str, Any] = {
    "id": str(GUILD), "name": "g", "owner_id": "1", "member_count": 2, "emojis": [], "stickers": [], "features": [],
    "threads": [], "voice_states": [], "presences": [], "members": [],
    "channels": [{"id": str(CHANNEL), "type": 0, "name": "general", "position": 0, "guild_id": str(GUILD)}],
    "roles": [{"id": str(GUILD), "name": "@everyone", "permissions": "0", "position": 0, "color": 0, "hoist": False,
               "managed": False, "mentionable": False}],
}
MESSAGE: dict[str, Any] = {
    "id": str(GUILD + 5), "channel_id": str(CHANNEL), "guild_id": str(GUILD), "content": "!ping", "type": 0,
    "author": {"id": "42", "username": "u", "discriminator": "0", "avatar": None},
    "member": {"roles": [], "joined_at": "2020-01-01T00:00:00+00:00", "deaf": False, "mute": False, "flags": 0},
    "timestamp": "2020-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False, "mention_everyone": False,
    "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
}


def _failed(event: str, stage: str) -> float:
    return FAILED.labels(event, stage)._value.get()


def _malformed() -> dict[str, Any]:
    """The MESSAGE_CREATE that once ended a cluster: its member's roles are objects, not ids."""
    bad = copy.deepcopy(MESSAGE)
    bad["id"] = str(GUILD + 6)
    bad["member"]["roles"] = [{"id": "1", "name": "a role object"}]
    return bad


async def test_a_malformed_message_is_counted_logged_and_skipped_and_the_next_one_parses(
        caplog: pytest.LogCaptureFixture) -> None:
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default(), shard_count=2,
                                  help_command=None, chunk_guilds_at_startup=False,
                                  member_cache_flags=discord.MemberCacheFlags.none())
    raw_parse = bot._connection.parsers["MESSAGE_CREATE"]
    tracker = ShardTracker([0, 1])
    tracker.attach(bot)
    parsers = bot._connection.parsers
    seen: list[discord.Message] = []

    async def on_message(message: discord.Message) -> None:
        seen.append(message)

    bot.add_listener(on_message)
    async with bot:  # discord.py's loop, for the listeners it schedules
        parsers["GUILD_CREATE"](GUILD_CREATE)
        assert bot.get_guild(GUILD) is not None
        with pytest.raises(TypeError):  # discord.py alone raises: in its shard worker, that ends the client
            raw_parse(_malformed())
        before = _failed("MESSAGE_CREATE", "parse")
        with caplog.at_level(logging.ERROR, logger="shard.event_guard"):
            parsers["MESSAGE_CREATE"](_malformed())  # behind the tracker: no exception escapes
        assert _failed("MESSAGE_CREATE", "parse") == before + 1
        [record] = [r for r in caplog.records if r.name == "shard.event_guard"]
        assert record.getMessage().startswith("[E2008] MESSAGE_CREATE failed (parse) on shard 1")
        assert record.exc_info is not None and isinstance(record.exc_info[1], TypeError)
        assert getattr(record, "shard_id", None) == 1 and getattr(record, "event", None) == "MESSAGE_CREATE"
        parsers["MESSAGE_CREATE"](MESSAGE)  # the next event is parsed and handled as usual
        await wait_for(lambda: seen, timeout=5, message="on_message")
        assert [m.id for m in seen] == [int(MESSAGE["id"])]
        assert tracker.events_by_type["MESSAGE_CREATE"] == 2


async def test_a_ready_whose_parse_raises_is_skipped_after_its_callbacks() -> None:
    calls: list[int] = []
    bot = SimpleNamespace(_connection=SimpleNamespace(parsers={"READY": lambda d: d["user"]}), shard_count=4,
                          add_listener=lambda *a: None, remove_listener=lambda *a: None)
    tracker = ShardTracker([3])
    tracker.on_ready_payload(calls.append)
    tracker.attach(bot)  # type: ignore[arg-type]
    before = _failed("READY", "parse")
    bot._connection.parsers["READY"]({"shard": [3, 4]})  # no "user": discord.py's parse raises KeyError
    assert calls == [3] and _failed("READY", "parse") == before + 1 and tracker.events_by_type == {"READY": 1}


def test_a_flood_of_failures_logs_one_traceback_a_minute_and_counts_them_all(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    log = FailureLog(60.0, clock=clock)
    before = _failed("GUILD_UPDATE", "parse")
    with caplog.at_level(logging.ERROR, logger="shard.event_guard"):
        for _ in range(100):
            event_failed("GUILD_UPDATE", "parse", ValueError("bad"), shard_id=2, log=log)
        event_failed("CHANNEL_UPDATE", "parse", ValueError("bad"), log=log)  # another kind: logged at once
        clock.advance(60.0)
        event_failed("GUILD_UPDATE", "parse", ValueError("bad"), shard_id=2, log=log)
    lines = [r.getMessage() for r in caplog.records if r.name == "shard.event_guard"]
    assert lines == [
        "[E2008] GUILD_UPDATE failed (parse) on shard 2: the event was skipped, the shard runs on",
        "[E2008] CHANNEL_UPDATE failed (parse) on shard ?: the event was skipped, the shard runs on",
        "[E2008] GUILD_UPDATE failed (parse) on shard 2: the event was skipped, the shard runs on "
        "(99 more since the last one logged)",
    ]
    assert _failed("GUILD_UPDATE", "parse") == before + 101


def test_the_shard_of_a_payload() -> None:
    assert shard_of("MESSAGE_CREATE", {"guild_id": str(GUILD)}, 2) == 1
    assert shard_of("GUILD_CREATE", {"id": str(GUILD)}, 2) == 1
    assert shard_of("READY", {"shard": [5, 8]}, 8) == 5
    assert shard_of("MESSAGE_CREATE", {"guild_id": str(GUILD)}, None) == 0  # unsharded
    for data in ({}, {"guild_id": "x"}, {"guild_id": None}, [1], None):
        assert shard_of("MESSAGE_CREATE", data, 2) is None


async def test_a_gateway_message_discord_py_cannot_read_is_skipped() -> None:
    ReadGate().install(commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.none()))
    ws = DiscordWebSocket.__new__(DiscordWebSocket)
    ws.log_receive = lambda _msg, /: None  # type: ignore[method-assign]
    ws.shard_id = 3
    before = _failed("unknown", "frame")
    await ws.received_message("{not json")  # discord.py raises ValueError decoding it
    assert _failed("unknown", "frame") == before + 1


async def test_a_listener_that_raises_is_counted() -> None:
    message = SimpleNamespace(guild=SimpleNamespace(shard_id=1))
    before = _failed("on_message", "listener")
    try:
        raise RuntimeError("a listener bug")
    except RuntimeError:
        await ClusterBot.on_error(None, "on_message", message)  # type: ignore[arg-type]
    assert _failed("on_message", "listener") == before + 1
