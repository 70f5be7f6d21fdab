"""The validate stage: argument limits for both paths, and neutralising echoed text."""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

import discord
import pytest
from discord.ext import commands
from hypothesis import given, settings
from hypothesis import strategies as st

from innkeeper.errors import CommandError, ErrorCode
from shard.pipeline.validation import DEFAULT_MAX_TEXT, check_text, clip, neutralise, validate_arguments


async def _params() -> dict[str, commands.Parameter]:
    async def cb(ctx: commands.Context[Any], n: commands.Range[int, 1, 5], mode: Literal["a", "b"],
                 free: str, *, text: commands.Range[str, 2, 10]) -> None:
        pass

    cmd: commands.Command[Any, ..., Any] = commands.Command(cb, name="x")
    return dict(cmd.clean_params)


def _bad(params: dict[str, commands.Parameter], **bound: Any) -> str:
    with pytest.raises(CommandError) as info:
        validate_arguments(params, bound)
    assert info.value.code is ErrorCode.COMMAND_BAD_ARGUMENT
    return info.value.user_message


async def test_ranges_literals_and_text_are_checked() -> None:
    p = await _params()
    validate_arguments(p, {"n": 3, "mode": "a", "free": "ok", "text": "hello"})
    assert "at most 5" in _bad(p, n=6)
    assert "at least 1" in _bad(p, n=0)
    assert "whole number" in _bad(p, n=1.5)
    assert "number" in _bad(p, n="3")  # a raw payload can carry the wrong type
    assert "number" in _bad(p, n=True)
    assert "one of: a, b" in _bad(p, mode="c")
    assert "at most 10" in _bad(p, text="x" * 11)
    assert "at least 2" in _bad(p, text=" x ")
    assert "control characters" in _bad(p, free="a\x07b")
    assert "control characters" in _bad(p, free="\ud800")
    assert f"at most {DEFAULT_MAX_TEXT}" in _bad(p, free="y" * (DEFAULT_MAX_TEXT + 1))


def test_newlines_and_tabs_are_text() -> None:
    assert check_text("t", "line\nline\tend") == "line\nline\tend"


def test_neutralise_escapes_mentions_and_markdown() -> None:
    out = neutralise("@everyone **bold** <@123456789012345678> @here")
    assert "@everyone" not in out and "@here" not in out and "<@123456789012345678>" not in out
    assert "\\*\\*bold\\*\\*" in out
    assert clip("abcdef", 4) == "abc…" and clip("abc", 4) == "abc"
    assert len(neutralise("x" * 100, limit=10)) == 10


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_neutralised_text_never_pings(text: str) -> None:
    out = neutralise(text)
    for mention in ("@everyone", "@here"):
        assert mention not in out
    assert discord.utils.escape_mentions(out) == out  # nothing left to escape


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=1200))
def test_check_text_accepts_or_refuses_clearly(text: str) -> None:
    try:
        assert check_text("t", text) == text
    except CommandError as exc:
        assert exc.code is ErrorCode.COMMAND_BAD_ARGUMENT and "`t`" in exc.user_message


#: What a masked link looks like to Discord: ``[label](target)`` with ``](`` touching.
MASKED_LINK = re.compile(r"\[[^\]]*\]\(")
#: Bidirectional controls and invisible characters an echo must not carry.
HIDDEN = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200c\u200d\u2060\ufeff"


@pytest.mark.parametrize("text", [
    "[click me](https://evil.example)",
    "[a](http://a)[b](http://b)",  # the second link used to survive discord.py's escape_markdown
    "[https://good.example](https://evil.example)",
    "[multi\nline](https://evil.example)",
    "[hidden]\u200b(https://evil.example)",  # an invisible character between the halves
    "[](https://evil.example)",
    "[x](<https://evil.example>)",
])
def test_neutralise_breaks_masked_links_and_shows_the_address(text: str) -> None:
    out = neutralise(text)
    assert "](" not in out and not MASKED_LINK.search(out)
    assert "evil.example" in out or "http://" in out  # the reader sees where it leads


@pytest.mark.parametrize("char", list(HIDDEN) + ["\U000e0041", "\u2028", "\u2029"])
def test_neutralise_removes_bidi_and_invisible_characters(char: str) -> None:
    out = neutralise(f"safe{char}txt.exe")
    assert char not in out and "safe" in out and "txt.exe" in out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]()<>ab:/.\\ \n*_`|") + list(HIDDEN)), max_size=60))
def test_neutralised_text_has_no_masked_link_and_nothing_hidden(text: str) -> None:
    out = neutralise(text)
    assert "](" not in out
    assert not any(unicodedata.category(ch) == "Cf" for ch in out)
    assert neutralise(out, limit=None).count("](") == 0


def test_neutralise_keeps_plain_text_and_emoji() -> None:
    assert neutralise("Grüße, 你好 — ok 👍") == "Grüße, 你好 — ok 👍"
    assert neutralise("[tag] (not a link)") == "[tag] (not a link)"
