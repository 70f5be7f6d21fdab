"""Automod's rules on raw MESSAGE_CREATE payloads: the thresholds of each level, invite links, copies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shard.automod.rules import (
    INVITE_RE,
    LEVELS,
    RULES,
    describe_levels,
    raw_violations,
    repeat_key,
    rules_for,
)
from shard.pipeline.config import AUTOMOD_NAMES

LOW, MEDIUM, HIGH = (rules_for(i) for i in (1, 2, 3))
assert LOW is not None and MEDIUM is not None and HIGH is not None


def payload(content: str, users: int = 0, roles: int = 0) -> dict[str, Any]:
    return {"id": "1", "channel_id": "2", "guild_id": "3", "content": content,
            "author": {"id": "4", "username": "u", "discriminator": "0"},
            "mentions": [{"id": str(100 + i)} for i in range(users)],
            "mention_roles": [str(200 + i) for i in range(roles)], "mention_everyone": False}


def test_the_levels_are_the_settings_levels_and_off_has_no_rules() -> None:
    assert tuple(r.name if r is not None else "off" for r in LEVELS) == AUTOMOD_NAMES
    assert rules_for(0) is None and rules_for(4) is None and rules_for(-1) is None


@pytest.mark.parametrize(("rules", "allowed"), [(LOW, 10), (MEDIUM, 6), (HIGH, 4)])
def test_mass_mentions_count_users_and_roles_above_the_level_threshold(rules: Any, allowed: int) -> None:
    assert raw_violations(payload("hi", users=allowed), "hi", rules) == ()
    assert raw_violations(payload("hi", users=allowed - 1, roles=1), "hi", rules) == ()
    assert raw_violations(payload("hi", users=allowed, roles=1), "hi", rules) == ("mass_mentions",)
    assert raw_violations(payload("hi", roles=allowed + 1), "hi", rules) == ("mass_mentions",)


def test_everyone_and_here_are_candidates_at_every_level() -> None:
    for rules in (LOW, MEDIUM, HIGH):
        for text in ("@everyone look", "hey @here"):
            assert raw_violations(payload(text), text, rules) == ("everyone_mention",)
    assert raw_violations(payload("mail me at a@b.c"), "mail me at a@b.c", HIGH) == ()


INVITES = ("discord.gg/abc", "https://discord.gg/Innkeeper", "http://www.discord.gg/x-y",
           "https://discord.com/invite/abcdef", "discordapp.com/invite/Zz9", "https://ptb.discord.com/invite/qq",
           "DISCORD.GG/SHOUT", "<https://discord.gg/hidden>")


@pytest.mark.parametrize("link", INVITES)
def test_invite_links_break_medium_and_high_but_not_low(link: str) -> None:
    text = f"join us {link} now"
    assert raw_violations(payload(text), text, MEDIUM) == ("invite_link",)
    assert raw_violations(payload(text), text, HIGH) == ("invite_link",)
    assert raw_violations(payload(text), text, LOW) == ()


@pytest.mark.parametrize("text", ["discord.gg is a domain", "discord.com/channels/1/2", "see discord.gg/",
                                  "https://example.com/invite/abc", "discord.gg / abc"])
def test_things_that_are_not_invites(text: str) -> None:
    assert raw_violations(payload(text), text, HIGH) == ()


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
_CODE = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"), min_size=2,
                max_size=12)


@given(_TEXT, _TEXT, st.sampled_from(("discord.gg/", "discord.com/invite/", "discordapp.com/invite/")), _CODE,
       st.sampled_from(("", "https://", "http://www.")), st.booleans())
def test_an_invite_anywhere_in_any_text_is_found(before: str, after: str, host: str, code: str, scheme: str,
                                                 upper: bool) -> None:
    link = scheme + (host.upper() if upper else host) + code
    text = f"{before} {link} {after}"
    assert "invite_link" in raw_violations(payload(text), text, MEDIUM)


@given(_TEXT)
@example("discord.com/invite")
@example("discordgg/abc")
def test_text_without_an_invite_host_never_matches(text: str) -> None:
    lowered = text.lower()
    if any(host in lowered for host in ("discord.gg/", "discord.com/invite/", "discordapp.com/invite/")):
        return
    assert INVITE_RE.search(text) is None


@given(_TEXT.filter(lambda t: "@" not in t and "/" not in t))
def test_plain_chat_breaks_nothing_at_any_level(text: str) -> None:
    for rules in (LOW, MEDIUM, HIGH):
        assert raw_violations(payload(text), text, rules) == ()


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=10),
                min_size=1, max_size=6), st.sampled_from((" ", "  ", "\n", "\t ")))
def test_copies_ignore_case_and_spacing_but_not_the_author(words: list[str], gap: str) -> None:
    text = " ".join(words)
    spaced = gap + gap.join(w.upper() for w in words) + gap
    if spaced.casefold().split() != text.casefold().split():
        return  # an upper-casing that changes the letters themselves (e.g. ß → SS)
    assert repeat_key("7", text) == repeat_key("7", spaced)
    assert repeat_key("7", text) != repeat_key("8", text)


def test_several_rules_are_reported_in_order() -> None:
    text = "@everyone discord.gg/spam"
    assert raw_violations(payload(text, users=9), text, HIGH) == ("mass_mentions", "everyone_mention", "invite_link")
    assert RULES.index("mass_mentions") < RULES.index("everyone_mention") < RULES.index("invite_link")


def test_the_documented_table_comes_from_the_levels() -> None:
    table = "\n".join(describe_levels())
    assert "| mass mentions | more than 10 user and role mentions in one message | more than 6" in table
    assert "the 5th copy within 10 s | the 3rd copy within 10 s |" in table
    assert table.count("`discord.gg/…`") == 2
