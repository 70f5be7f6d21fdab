"""Where the bot may post (from discord.py's cache), what it remembers of refusals, and what users are told."""

from __future__ import annotations

import datetime as dt
from typing import Any

import discord
import pytest
from discord.state import ConnectionState

from db.reminders import Undelivered
from shard.channel_access import RefusedTargets, bot_can_post
from shard.cogs.reminders import undelivered_notice

GUILD, BOT, SEND, VIEW = 81384788765712384, 999, 1 << 11, 1 << 10


def _guild(everyone: int, channels: list[dict[str, Any]]) -> discord.Guild:
    state = ConnectionState(dispatch=lambda *a, **k: None, handlers={}, hooks={}, http=None,  # type: ignore[arg-type]
                            intents=discord.Intents.default())
    bot = {"id": str(BOT), "username": "Innkeeper", "discriminator": "0", "avatar": None, "bot": True}
    state.user = discord.ClientUser(state=state, data=bot)  # type: ignore[arg-type]
    role = {"id": str(GUILD), "name": "@everyone", "position": 0, "permissions": str(everyone), "color": 0,
            "hoist": False, "mentionable": False, "managed": False}
    member = {"user": bot, "roles": [], "joined_at": None, "deaf": False, "mute": False, "flags": 0}
    return discord.Guild(data={"id": str(GUILD), "name": "T", "owner_id": "5", "member_count": 2, "roles": [role],
                               "channels": channels, "members": [member]}, state=state)


def _channel(cid: int, *overwrites: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(cid), "type": 0, "name": f"c{cid}", "position": cid, "permission_overwrites": list(overwrites)}


def test_the_bot_needs_view_and_send_in_the_channel() -> None:
    guild = _guild(VIEW | SEND, [
        _channel(1),
        _channel(2, {"id": str(BOT), "type": 1, "allow": "0", "deny": str(SEND)}),  # the bot itself denied
        _channel(3, {"id": str(GUILD), "type": 0, "allow": "0", "deny": str(VIEW)}),  # hidden from @everyone
        _channel(4, {"id": str(GUILD), "type": 0, "allow": "0", "deny": str(SEND)},
                 {"id": str(BOT), "type": 1, "allow": str(SEND), "deny": "0"}),  # denied, but allowed to the bot
    ])
    assert [bot_can_post(guild.get_channel(c)) for c in (1, 2, 3, 4)] == [True, False, False, True]
    no_send = _guild(VIEW, [_channel(5)])
    assert bot_can_post(no_send.get_channel(5)) is False


def test_unknown_places_are_left_to_delivery_and_dms_are_fine() -> None:
    assert bot_can_post(None) is None
    assert bot_can_post(discord.Object(5)) is None  # e.g. a PartialMessageable: the cache cannot tell
    state = _guild(0, [])._state
    dm = discord.DMChannel(me=state.user, state=state, data={"id": "7", "type": 1, "recipients": []})  # type: ignore[arg-type, typeddict-item]
    assert bot_can_post(dm) is True


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_remembered_for_a_while_and_bounded() -> None:
    clock = Clock()
    refused = RefusedTargets(ttl=60.0, max_size=3, clock=clock)
    refused.add("channel", 1, "forbidden")
    refused.add("dm", 1, "dm_closed")
    assert refused.get("channel", 1) == "forbidden" and refused.get("dm", 1) == "dm_closed"
    assert refused.get("channel", 2) is None and refused.get("dm", 2) is None
    clock.now = 30.0
    refused.add("channel", 2, "gone")
    refused.add("channel", 3, "forbidden")  # over the bound: the oldest goes
    assert len(refused) == 3 and refused.get("channel", 1) is None and refused.get("dm", 1) == "dm_closed"
    clock.now = 61.0
    assert refused.get("dm", 1) is None  # expired
    assert refused.get("channel", 3) == "forbidden"
    clock.now = 200.0
    refused.add("channel", 9, "forbidden")
    assert len(refused) == 1  # expired entries are dropped as new ones come


def test_the_undelivered_notice_says_which_and_why_without_the_text() -> None:
    due = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert undelivered_notice([]) == ""
    text = undelivered_notice([Undelivered(3, 1, 42, due, "forbidden"), Undelivered(4, None, None, due, "dm_closed"),
                               Undelivered(5, 1, 42, due, "unreadable")])
    lines = text.splitlines()
    assert lines[0] == (f"⚠️ I couldn't deliver reminder #3 (due <t:{int(due.timestamp())}:R>): I'm not allowed to "
                        "post in <#42>, and your DMs are closed to me.")
    assert "#4" in lines[1] and "your DMs are closed to me" in lines[1]
    assert "#5" in lines[2] and "could no longer be read" in lines[2]
    assert lines[-1].startswith("To get reminders")
    many = undelivered_notice([Undelivered(i, 1, 42, due, "gave_up") for i in range(1, 9)])
    assert many.count("⚠️") == 5 and "…and 3 more" in many and "To get reminders" not in many


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 10])
def test_backoff_delay_for_a_stored_attempt_count(attempt: int) -> None:
    from innkeeper.backoff import Backoff

    backoff = Backoff(15.0, 900.0)
    ceiling = min(900.0, 15.0 * 2 ** attempt)
    assert ceiling / 2 <= backoff.delay(attempt) <= ceiling
    assert backoff.attempts == 0  # the count lives with the reminder, not here
