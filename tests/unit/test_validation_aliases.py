"""Alias rules: shadowing, cycles, depth, length, and expansion."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from innkeeper.errors import CommandError, ErrorCode
from shard.pipeline.aliasing import MAX_DEPTH, MAX_EXPANDED, MAX_EXPANSION, check_alias, expand

COMMANDS = {"ping", "remind", "help", "settings"}


def is_command(word: str) -> bool:
    return word in COMMANDS


def resolver(table: dict[str, str]):  # type: ignore[no-untyped-def]
    async def resolve(name: str) -> str | None:
        return table.get(name)
    return resolve


async def refused(name: str, line: str, table: dict[str, str] | None = None) -> str:
    with pytest.raises(CommandError) as info:
        await check_alias(name, line, resolve=resolver(table or {}), is_command=is_command)
    assert info.value.code is ErrorCode.COMMAND_BAD_ARGUMENT
    return info.value.user_message


async def test_a_good_alias_is_normalised() -> None:
    assert await check_alias("r", "  !remind 10m tea ", resolve=resolver({}), is_command=is_command,
                             prefixes=("!",)) == "remind 10m tea"
    assert await check_alias("p", "/ping", resolve=resolver({}), is_command=is_command) == "ping"
    # pointing at another alias is fine
    assert await check_alias("rr", "r now", resolve=resolver({"r": "remind 10m"}), is_command=is_command) == "r now"


async def test_shadowing_a_command_is_refused() -> None:
    assert "cannot shadow" in await refused("ping", "help")


async def test_cycles_are_refused() -> None:
    assert "loops" in await refused("a", "b", {"b": "a x"})
    assert "loops" in await refused("a", "a")
    assert "loops" in await refused("a", "b", {"b": "c", "c": "b"})


async def test_depth_is_bounded() -> None:
    chain = {f"a{i}": f"a{i + 1}" for i in range(MAX_DEPTH + 2)}
    chain[f"a{MAX_DEPTH + 2}"] = "ping"
    assert "deeper than" in await refused("start", "a0", chain)


async def test_over_long_expansions_are_refused() -> None:
    assert f"at most {MAX_EXPANSION}" in await refused("x", "ping " + "y" * MAX_EXPANSION)
    # each step is short, but together they grow past the limit
    table = {"b": "c " + "z" * 390, "c": "d " + "z" * 390, "d": "e " + "z" * 390, "e": "f " + "z" * 390,
             "f": "ping " + "z" * 390}
    assert f"more than {MAX_EXPANDED}" in await refused("a", "b " + "y" * 390, table)


async def test_bad_names_and_targets() -> None:
    assert "1-32 letters" in await refused("two words", "ping")
    assert "1-32 letters" in await refused("x" * 33, "ping")
    assert "not a command" in await refused("x", "nosuch thing")
    assert "needs a command" in await refused("x", "   ")


async def test_expansion_appends_the_rest() -> None:
    line = await expand("r", "now please", resolve=resolver({"r": "rr soon", "rr": "remind 10m"}),
                        is_command=is_command)
    assert line == "remind 10m soon now please"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40), st.text(max_size=600))
async def test_any_alias_is_accepted_or_refused_clearly(name: str, line: str) -> None:
    try:
        out = await check_alias(name, line, resolve=resolver({"r": "remind"}), is_command=is_command)
    except CommandError as exc:
        assert exc.code is ErrorCode.COMMAND_BAD_ARGUMENT and exc.user_message
    else:
        assert out and len(out) <= MAX_EXPANSION
