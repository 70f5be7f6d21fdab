"""Permission resolution and the grant rules, including escalation attempts."""

from __future__ import annotations

import itertools

import discord
import pytest

from innkeeper.errors import CommandError, ErrorCode
from shard.pipeline.levels import (
    Level,
    check_command_override,
    check_role_grant,
    is_moderator,
    member_level,
    required_level,
)

OWNERS = {1}


def test_owner_comes_from_configuration_only() -> None:
    assert member_level(1, owner_ids=OWNERS) is Level.OWNER
    # a role stored with the owner level (never written by the rules) still cannot make an owner
    assert member_level(5, owner_ids=OWNERS, role_ids=[9], role_levels={9: Level.OWNER}) is Level.ADMIN
    assert member_level(5, owner_ids=OWNERS, is_guild_owner=True, administrator=True) is Level.ADMIN


def test_discord_permissions_map_to_levels() -> None:
    assert member_level(5, owner_ids=OWNERS) is Level.EVERYONE
    assert member_level(5, owner_ids=OWNERS, moderator=True) is Level.MOD
    assert member_level(5, owner_ids=OWNERS, administrator=True) is Level.ADMIN
    assert member_level(5, owner_ids=OWNERS, is_guild_owner=True) is Level.ADMIN


def test_moderator_permissions() -> None:
    assert is_moderator(discord.Permissions(kick_members=True))
    assert is_moderator(discord.Permissions(manage_guild=True))
    assert not is_moderator(discord.Permissions(send_messages=True, read_messages=True))


def test_the_highest_role_wins() -> None:
    levels = {10: Level.MOD, 11: Level.ADMIN, 12: Level.EVERYONE}
    assert member_level(5, owner_ids=OWNERS, role_ids=[12, 10], role_levels=levels) is Level.MOD
    assert member_level(5, owner_ids=OWNERS, role_ids=[10, 11], role_levels=levels) is Level.ADMIN
    assert member_level(5, owner_ids=OWNERS, role_ids=[99], role_levels=levels) is Level.EVERYONE
    # a role never lowers what Discord permissions give
    assert member_level(5, owner_ids=OWNERS, administrator=True, role_ids=[10], role_levels=levels) is Level.ADMIN


def test_required_level_honours_overrides_within_the_floor() -> None:
    assert required_level(Level.ADMIN, None, Level.MOD) is Level.ADMIN
    assert required_level(Level.ADMIN, Level.MOD, Level.MOD) is Level.MOD
    assert required_level(Level.ADMIN, Level.EVERYONE, Level.MOD) is Level.MOD
    assert required_level(Level.EVERYONE, Level.ADMIN, Level.EVERYONE) is Level.ADMIN
    assert required_level(Level.OWNER, Level.EVERYONE, Level.EVERYONE) is Level.OWNER


def _refused(fn: object, code: ErrorCode = ErrorCode.COMMAND_FORBIDDEN) -> str:
    with pytest.raises(CommandError) as info:
        fn()  # type: ignore[operator]
    assert info.value.code is code
    return info.value.user_message


def test_a_mod_cannot_make_a_role_admin() -> None:
    msg = _refused(lambda: check_role_grant(Level.MOD, None, Level.ADMIN))
    assert "above your own (mod)" in msg


def test_nobody_grants_owner() -> None:
    for actor in Level:
        assert "configuration" in _refused(lambda a=actor: check_role_grant(a, None, Level.OWNER))


def test_a_mod_cannot_demote_an_admin_role() -> None:
    assert "ask someone" in _refused(lambda: check_role_grant(Level.MOD, Level.ADMIN, Level.EVERYONE))


def test_grants_up_to_ones_own_level_are_allowed() -> None:
    check_role_grant(Level.MOD, None, Level.MOD)
    check_role_grant(Level.ADMIN, Level.MOD, Level.ADMIN)
    check_role_grant(Level.ADMIN, Level.ADMIN, Level.EVERYONE)
    check_role_grant(Level.OWNER, Level.ADMIN, Level.MOD)


def test_role_grant_rule_exhaustively() -> None:
    """No combination lets anyone end with a role above themselves or touch a role above them."""
    for actor, current, new in itertools.product(Level, [None, *Level], Level):
        try:
            check_role_grant(actor, current, new)
        except CommandError:
            continue
        assert new <= actor and new < Level.OWNER
        assert current is None or current <= actor


def test_command_override_escalation_attempts() -> None:
    base = {"command": "settings set", "default": Level.ADMIN, "floor": Level.MOD}
    # a mod lowering an admin command to mod (so that they could run it) is refused
    assert "above your own level" in _refused(
        lambda: check_command_override(Level.MOD, current=Level.ADMIN, new=Level.MOD, **base))  # type: ignore[arg-type]
    # a mod cannot require admin for a mod command (above their own level)
    _refused(lambda: check_command_override(Level.MOD, current=Level.MOD, new=Level.ADMIN, **base))  # type: ignore[arg-type]
    # an admin cannot go below the floor
    _refused(lambda: check_command_override(Level.ADMIN, current=Level.ADMIN, new=Level.EVERYONE, **base),  # type: ignore[arg-type]
             ErrorCode.COMMAND_BAD_ARGUMENT)
    # nobody requires owner, nobody changes an owner-only command
    _refused(lambda: check_command_override(Level.OWNER, current=Level.ADMIN, new=Level.OWNER, **base))  # type: ignore[arg-type]
    _refused(lambda: check_command_override(Level.OWNER, command="debug", default=Level.OWNER, floor=Level.OWNER,
                                            current=Level.OWNER, new=Level.ADMIN))
    # an admin may lower an admin command to mod
    check_command_override(Level.ADMIN, current=Level.ADMIN, new=Level.MOD, **base)  # type: ignore[arg-type]


def test_command_override_rule_exhaustively() -> None:
    for actor, default, current, new in itertools.product(Level, Level, Level, Level):
        floor = Level.EVERYONE
        try:
            check_command_override(actor, command="x", default=default, floor=floor, current=current, new=new)
        except CommandError:
            continue
        assert default < Level.OWNER and new < Level.OWNER and new <= actor and current <= actor


def test_level_names_parse() -> None:
    assert Level.parse(" Admin ") is Level.ADMIN
    assert Level.parse("moderator") is Level.MOD
    assert Level.parse("everyone") is Level.EVERYONE
    with pytest.raises(ValueError, match="use one of"):
        Level.parse("god")
