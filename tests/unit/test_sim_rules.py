"""The simulator's rules without sockets: application flags, the close-code table, the invalid-request limit."""

from __future__ import annotations

import pytest

from simulator.application import EDITABLE_FLAGS, Application, parse_privileged_intents
from simulator.close_codes import ends_session
from simulator.intents import Intent
from simulator.invalid_requests import InvalidRequestLimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_privileged_intents_parse_into_the_limited_flags() -> None:
    assert parse_privileged_intents("presences,members,message_content") == EDITABLE_FLAGS
    assert parse_privileged_intents(" Members , message-content ") == (1 << 15) | (1 << 19)
    assert parse_privileged_intents("none") == 0
    with pytest.raises(ValueError, match="unknown privileged intent 'everything'"):
        parse_privileged_intents("members,everything")


@pytest.mark.parametrize(("flags", "intents", "denied"), [
    (0, Intent.GUILDS | Intent.GUILD_MESSAGES, 0),  # no privileged intent asked for
    (0, Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT, Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT),
    (1 << 12, Intent.GUILD_PRESENCES, 0),  # the non-limited flag grants it too
    (1 << 14, Intent.GUILD_MEMBERS | Intent.MESSAGE_CONTENT, Intent.MESSAGE_CONTENT),
    (1 << 18 | 1 << 15, Intent.GUILD_MEMBERS | Intent.MESSAGE_CONTENT, 0),
])
def test_disallowed_names_the_privileged_intents_the_flags_lack(flags: int, intents: int, denied: int) -> None:
    assert Application(flags, "t").disallowed(intents) == denied


def test_a_token_reset_replaces_the_token() -> None:
    app = Application(0, "old")
    new = app.reset_token()
    assert new != "old" and app.token == new
    assert app.reset_token("chosen") == "chosen" == app.token


@pytest.mark.parametrize(("code", "ended"), [
    (4000, False), (4001, False), (4002, False), (4003, False), (4005, False), (4008, False), (1006, False),
    (4004, True), (4007, True), (4009, True), (4010, True), (4011, True), (4012, True), (4013, True), (4014, True),
    (1000, True), (1001, True),
])
def test_the_close_code_table(code: int, ended: bool) -> None:
    assert ends_session(code) is ended


def test_invalid_requests_ban_one_past_the_limit_per_ip_in_a_sliding_window() -> None:
    clock = FakeClock()
    limit = InvalidRequestLimit(3, window=10.0, ban=5.0, clock=clock)
    assert not any(limit.record("a") for _ in range(3))
    clock.now += 10.0  # the first three left the window
    assert not any(limit.record("a") for _ in range(3))
    assert not limit.record("b")  # another IP counts apart
    assert limit.record("a") and limit.banned_for("a") == 5.0 and limit.banned_for("b") == 0.0
    clock.now += 4.5
    assert limit.banned_for("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limit.banned_for("a") == 0.0
    assert not limit.record("a")  # a ban starts the count afresh
    never = InvalidRequestLimit(0, window=10.0, ban=5.0, clock=clock)
    assert not any(never.record("a") for _ in range(100)) and never.banned_for("a") == 0.0
    with pytest.raises(ValueError):
        InvalidRequestLimit(-1, window=10.0, ban=5.0)
