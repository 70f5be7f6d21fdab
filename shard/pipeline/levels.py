"""Permission levels and the rules that keep anyone from escalating them.

Every command requires a :class:`Level`. A member's level is the highest of

* ``OWNER`` when their id is in ``Settings.owner_ids`` (``INNKEEPER_OWNER_IDS``): the only way to
  be an owner; no role and no command can grant it;
* ``ADMIN`` for the guild's owner and members with Discord's *Administrator* permission;
* ``MOD`` for members with a moderator's Discord permissions (*Manage Server*, *Manage Messages*,
  *Kick*, *Ban* or *Timeout Members*);
* the level the guild gave one of their roles (``/permissions role``), capped at ``ADMIN``.

A guild may change the level a command requires (``/permissions command``) within the command's
*floor*; owner-only commands cannot be changed at all. The grant rules below are pure functions so
they can be tested exhaustively: nobody grants a level above their own, changes a role or a command
that is above their own level, or grants ``OWNER``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import discord

from innkeeper.errors import CommandError, ErrorCode

__all__ = (
    "Level",
    "is_moderator",
    "member_level",
    "required_level",
    "check_role_grant",
    "check_command_override",
)


class Level(enum.IntEnum):
    """Who may run a command; higher includes lower."""

    EVERYONE = 0
    MOD = 1
    ADMIN = 2
    OWNER = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Level:
        """Parse ``"mod"``, ``"Admin"``, ``"everyone"`` … (also ``"moderator"``, ``"administrator"``).

        Raises
        ------
        ValueError
            For anything else; the message lists the accepted names.
        """
        key = text.strip().lower()
        key = {"moderator": "mod", "administrator": "admin", "all": "everyone", "@everyone": "everyone"}.get(key, key)
        for level in cls:
            if level.label == key:
                return level
        raise ValueError(f"unknown level; use one of: {', '.join(lv.label for lv in cls)}")


def is_moderator(perms: discord.Permissions) -> bool:
    """Whether Discord permissions make a member a moderator."""
    return bool(perms.manage_guild or perms.manage_messages or perms.kick_members or perms.ban_members
                or perms.moderate_members)


def member_level(
    user_id: int,
    *,
    owner_ids: Iterable[int],
    is_guild_owner: bool = False,
    administrator: bool = False,
    moderator: bool = False,
    role_ids: Iterable[int] = (),
    role_levels: Mapping[int, Level] | None = None,
) -> Level:
    """The level of one member in one guild (``EVERYONE`` in DMs unless an owner).

    Parameters
    ----------
    user_id:
        The member.
    owner_ids:
        ``Settings.owner_ids``.
    is_guild_owner, administrator, moderator:
        What Discord says about the member in this guild (see :func:`is_moderator`).
    role_ids:
        The member's roles.
    role_levels:
        The guild's role → level table. A stored ``OWNER`` (which the grant rules never write) is
        read as ``ADMIN``.
    """
    if user_id in set(owner_ids):
        return Level.OWNER
    level = Level.EVERYONE
    if is_guild_owner or administrator:
        level = Level.ADMIN
    elif moderator:
        level = Level.MOD
    if role_levels:
        for rid in role_ids:
            granted = role_levels.get(rid)
            if granted is not None and granted > level:
                level = min(granted, Level.ADMIN)
    return Level(level)


def required_level(default: Level, override: Level | None, floor: Level) -> Level:
    """The level a command requires in a guild: its default, or the guild's override above its floor."""
    if default is Level.OWNER or override is None:
        return default
    return Level(max(override, floor))


def _forbid(message: str) -> CommandError:
    return CommandError(message, code=ErrorCode.COMMAND_FORBIDDEN)


def check_role_grant(actor: Level, current: Level | None, new: Level) -> None:
    """Refuse a role level change that would escalate.

    Parameters
    ----------
    actor:
        The level of the member making the change.
    current:
        The role's level now (``None`` when it has none).
    new:
        The level asked for.

    Raises
    ------
    CommandError
        ``COMMAND_FORBIDDEN`` with a message saying why.
    """
    if new >= Level.OWNER:
        raise _forbid("The owner level comes from the bot's configuration and cannot be given to a role.")
    if new > actor:
        raise _forbid(f"You can't give a role the {new.label} level: it is above your own ({actor.label}).")
    if current is not None and current > actor:
        raise _forbid(f"That role has the {current.label} level, above your own ({actor.label}); "
                      "ask someone at that level to change it.")


def check_command_override(
    actor: Level, *, command: str, default: Level, floor: Level, current: Level, new: Level
) -> None:
    """Refuse a per-command level change that would escalate or undercut the command's floor.

    Parameters
    ----------
    actor:
        The level of the member making the change.
    command:
        The command's qualified name (for messages).
    default, floor:
        The level the command requires by default, and the lowest a guild may set.
    current:
        The level the command requires in this guild now.
    new:
        The level asked for.

    Raises
    ------
    CommandError
        ``COMMAND_FORBIDDEN`` (escalation) or ``COMMAND_BAD_ARGUMENT`` (below the floor).
    """
    if default is Level.OWNER:
        raise _forbid(f"/{command} is for the bot's owners only and cannot be changed.")
    if new >= Level.OWNER:
        raise _forbid("The owner level comes from the bot's configuration and cannot be required by a guild.")
    if current > actor:
        raise _forbid(f"/{command} requires {current.label}, above your own level ({actor.label}).")
    if new > actor:
        raise _forbid(f"You can't require {new.label} for /{command}: it is above your own level ({actor.label}).")
    if new < floor:
        raise CommandError(f"/{command} needs at least the {floor.label} level.", code=ErrorCode.COMMAND_BAD_ARGUMENT)
