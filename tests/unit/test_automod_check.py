"""The one-pass check against the plain rules: the same verdicts and the same copy counters, message by message."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shard.automod.check import check
from shard.automod.repeats import RepeatTracker
from shard.automod.rules import LEVELS, LevelRules, raw_violations, repeat_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain(data: dict[str, Any], content: str, guild_id: int, rules: LevelRules, repeats: RepeatTracker
          ) -> tuple[str, ...]:
    """The verdict as the rules state it (what :meth:`Automod.inspect` computed before the one-pass check)."""
    found = raw_violations(data, content, rules)
    repeat = rules.repeats
    if repeat is not None:
        author = data.get("author")
        key = repeat_key(author.get("id") if isinstance(author, dict) else None, content)
        if repeats.count(guild_id, key, repeat) >= repeat.copies:
            found = (*found, "repeated_message")
    return found


#: Pieces that matter to some rule, glued together with arbitrary text: copies, near-copies and rule breakers.
_PIECES = st.sampled_from(("hi", "HI", "Hi there", " ", "  ", "\n", "\t", "\r", "\r\n", "\u2003", "\u00a0", "ß", "SS",
                           "@", "@everyone", "@here", "@Everyone", "/", "discord.gg/", "discord.gg/ab",
                           "https://discord.com/invite/xyz", "discordapp.com/invite/Q", "DISCORD.GG/x-1",
                           "discord.gg / ab", "<@123>", "<@&456>", "mail a@b.c", "a/b", "x"))
_TEXT = st.one_of(st.lists(st.one_of(_PIECES, st.text(max_size=6)), min_size=1, max_size=6).map("".join),
                  st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
_MENTIONS = st.one_of(st.none(), st.just([]), st.lists(st.fixed_dictionaries({"id": st.just("9")}), max_size=12),
                      st.just("not a list"), st.just({}))
_ROLES = st.one_of(st.none(), st.just([]), st.lists(st.just("8"), max_size=12), st.just(0), st.just("7"))
_AUTHOR = st.one_of(st.sampled_from(("1", "2", "3")).map(lambda a: {"id": a, "username": "u"}),
                    st.just({"username": "no id"}), st.just("not a dict"), st.none())


def _message(content: str, mentions: Any, roles: Any, author: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": "1", "channel_id": "2", "guild_id": "3", "content": content}
    for key, value in (("mentions", mentions), ("mention_roles", roles), ("author", author)):
        if value is not None:
            data[key] = value
    return data


_STEP = st.tuples(st.integers(1, 3), st.integers(1, 3), _TEXT, _MENTIONS, _ROLES, _AUTHOR,
                  st.sampled_from((0.0, 0.0, 0.5, 3.0, 9.9, 10.0, 25.0)))


@given(st.lists(_STEP, min_size=1, max_size=60), st.sampled_from((None, 0)))
@settings(max_examples=200, deadline=None)
def test_the_one_pass_check_gives_the_plain_rules_verdicts(steps: list[tuple[Any, ...]], repeat_of: int | None
                                                           ) -> None:
    clock = Clock()
    reference, fused = RepeatTracker(per_guild=6, max_entries=20, clock=clock), RepeatTracker(
        per_guild=6, max_entries=20, clock=clock)
    history: list[tuple[Any, ...]] = []
    for step in steps:
        level, guild_id, content, mentions, roles, author, wait = step
        if repeat_of is not None and history and len(history) % 3 == 0:  # copies: some of the earlier messages again
            level, guild_id, content, mentions, roles, author, _ = history[len(history) // 2]
        history.append(step)
        clock.now += wait
        rules = LEVELS[level]
        assert rules is not None
        data = _message(content, mentions, roles, author)
        assert check(data, content, guild_id, rules, fused) == plain(data, content, guild_id, rules, reference)
        assert len(fused) == len(reference) and fused.guilds == reference.guilds


@given(_TEXT, _AUTHOR)
def test_the_key_in_line_is_repeat_key(content: str, author: Any) -> None:
    """Two trackers fed once each hold the same key: the inline key is :func:`repeat_key`'s."""
    high = LEVELS[3]
    assert high is not None and high.repeats is not None
    fused = RepeatTracker()
    check(_message(content, None, None, author), content, 1, high, fused)
    author_id = author.get("id") if isinstance(author, dict) else None
    assert list(fused._guilds[1].current) == [repeat_key(author_id, content)]


def test_plain_chat_takes_no_rule_and_copies_still_count() -> None:
    high = LEVELS[3]
    assert high is not None
    tracker = RepeatTracker(clock=Clock())
    data = _message("good morning", [], [], {"id": "1"})
    assert [check(data, "good morning", 1, high, tracker) for _ in range(4)] == [(), (), ("repeated_message",),
                                                                                 ("repeated_message",)]
    spam = "@everyone discord.gg/spam"
    assert check(_message(spam, [{"id": "2"}] * 5, [], {"id": "1"}), spam, 1, high, tracker) == (
        "mass_mentions", "everyone_mention", "invite_link")
