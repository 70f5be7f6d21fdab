"""Parsing durations and moments."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard.pipeline.durations import MAX_AHEAD, format_duration, parse_duration, parse_when

NOW = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("10m", 600), ("2h30m", 9000), ("1h 30 min", 5400), ("3 days", 259200), ("90s", 90), ("1w", 604800),
    ("in 5 minutes", 300), ("1d,2h", 93600), ("45 SECONDS", 45),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("", "duration like"), ("soon", "duration like"), ("10", "duration like"), ("10x", 'Unknown unit "x"'),
    ("1h1h", "appears twice"), ("10m later", "duration like"), ("400d", "too far ahead"), ("0s", "too short"),
    ("1" * 80 + "s", "duration like"), ("m10", "duration like"),
])
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_moments() -> None:
    assert parse_when("10m", NOW) == NOW + timedelta(minutes=10)
    assert parse_when("14:30", NOW) == datetime(2030, 1, 10, 14, 30, tzinfo=UTC)
    assert parse_when("11:00", NOW) == datetime(2030, 1, 11, 11, 0, tzinfo=UTC)  # tomorrow
    assert parse_when("2030-02-01 09:00", NOW) == datetime(2030, 2, 1, 9, 0, tzinfo=UTC)
    assert parse_when("2030-02-01T09:00+02:00", NOW) == datetime(2030, 2, 1, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "message"), [
    ("2029-01-01 10:00", "in the past"), ("2035-01-01", "too far ahead"), ("25:00", "not a time of day"),
    ("2030-13-01", "not a valid date"), ("tomorrow", "duration like"),
])
def test_bad_moments(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_when(text, NOW)


def test_format_duration() -> None:
    assert format_duration(timedelta(hours=2, minutes=30)) == "2h 30m"
    assert format_duration(timedelta(days=2, hours=1, minutes=5, seconds=3)) == "2d 1h"
    assert format_duration(timedelta(seconds=59)) == "59s"
    assert format_duration(timedelta(hours=2, minutes=29, seconds=59.6)) == "2h 30m"
    assert format_duration(timedelta(hours=1, seconds=5)) == "1h"
    assert format_duration(timedelta(minutes=3, seconds=7)) == "3m 7s"
    assert format_duration(timedelta(0)) == "0s"


#: What a refusal says: how to write a duration or a time, or the range a valid one must fall in.
_EXPLAINS = re.compile(r'Give a duration like "10m", "2h30m" or "1d", or a time like "14:30" or "2030-01-31 09:00" '
                       r"\(UTC\)\.$"
                       r"|^That is too far ahead: at most \d+d( \d+h)?\.$"
                       r"|^That is too short: at least \d+s\.$")


def explains(exc: ValueError) -> bool:
    """The parser's own explanation, not an error of the code underneath (``int()``, ``datetime``…)."""
    return type(exc) is ValueError and _EXPLAINS.search(str(exc)) is not None


def test_refusals_explain_what_to_type() -> None:
    for text in ("soon", "10x", "1h1h", "400d", "0s", "25:00", "2030-13-01", "2029-01-01 10:00", "2035-01-01"):
        with pytest.raises(ValueError) as info:
            parse_when(text, NOW)
        assert explains(info.value), (text, str(info.value))
    assert not explains(ValueError("invalid literal for int() with base 10: 'x'"))
    assert not explains(ValueError("month must be in 1..12"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_explains(text: str) -> None:
    try:
        when = parse_when(text, NOW)
    except ValueError as exc:
        assert explains(exc), f"{text!r} was refused without an explanation: {exc!r}"
    else:
        assert NOW < when <= NOW + MAX_AHEAD
