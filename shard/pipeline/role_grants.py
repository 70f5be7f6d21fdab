"""Which roles a member may give a level to: Discord's role hierarchy, applied to ``/permissions role``.

A level given to a role reaches every member who holds it, so the grant is guarded the way Discord
guards editing a role (and more):

* the actor needs Discord's **Manage Roles** permission (*Administrator* includes it), on top of
  the bot level the command itself needs;
* the role must sit **strictly below the actor's top role** in the server's hierarchy, so nobody
  raises their own top role, a role beside it, or one above it. The server's owner is above every
  role;
* **@everyone** and **managed roles** (a bot's own role, an integration's, the booster role) never
  get a level, whoever asks: every member holds @everyone, and nobody in the server controls who
  holds a managed role. Removing such a grant (level ``everyone``), made before this rule existed,
  is allowed under the first two rules.

The order of roles is Discord's (and discord.py's ``Role.__lt__``): a higher ``position`` is higher,
and of two roles at the same position the one with the lower id is higher. :func:`check_role_target`
is pure, so the rule can be tested as a property over generated hierarchies; :func:`role_facts` and
:func:`actor_facts` read the facts off discord.py objects. The level rules themselves (nobody grants
above their own level) are :func:`shard.pipeline.levels.check_role_grant`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import discord

from innkeeper.errors import CommandError, ErrorCode

from .levels import Level
from .validation import neutralise

__all__ = ("RoleFacts", "ActorFacts", "role_facts", "actor_facts", "check_role_target", "is_below", "counts_for_levels")


@dataclass(frozen=True, slots=True)
class RoleFacts:
    """What the rule needs to know about one role.

    Attributes
    ----------
    id, position:
        The role's id and its position in the server's hierarchy.
    name:
        For messages (already safe to show).
    managed:
        Managed by Discord or an integration (a bot's role, an integration's, the booster role).
    is_default:
        The server's @everyone role.
    """

    id: int
    position: int
    name: str = "that role"
    managed: bool = False
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class ActorFacts:
    """What the rule needs to know about the member asking.

    Attributes
    ----------
    is_guild_owner:
        The member owns the server (above every role).
    manage_roles:
        Discord's Manage Roles permission (Administrator includes it).
    top_role:
        Their highest role (@everyone when they have no other).
    """

    is_guild_owner: bool
    manage_roles: bool
    top_role: RoleFacts


def _rank(role: RoleFacts) -> tuple[int, int]:
    return role.position, -role.id


def is_below(role: RoleFacts, other: RoleFacts) -> bool:
    """Whether ``role`` is strictly below ``other`` in Discord's hierarchy (never for the same role)."""
    return _rank(role) < _rank(other)


def _managed(role: discord.Role) -> bool:
    return bool(role.managed or role.is_bot_managed() or role.is_integration() or role.is_premium_subscriber())


def counts_for_levels(role: Any, guild_id: int) -> bool:
    """Whether a level stored for ``role`` may count: never for @everyone or a managed role.

    A grant written before :func:`check_role_target` existed would otherwise still make every member,
    or whoever an integration hands its role to, a moderator.
    """
    if getattr(role, "id", None) == guild_id:
        return False
    return not bool(getattr(role, "managed", False))


def role_facts(role: discord.Role) -> RoleFacts:
    """The facts of a discord.py role (its name neutralised for messages)."""
    return RoleFacts(role.id, role.position, neutralise(role.name, limit=100), _managed(role), role.is_default())


def actor_facts(member: discord.Member) -> ActorFacts:
    """The facts of the member running the command."""
    return ActorFacts(is_guild_owner=member.guild.owner_id == member.id,
                      manage_roles=bool(member.guild_permissions.manage_roles),
                      top_role=role_facts(member.top_role))


def _forbid(message: str) -> CommandError:
    return CommandError(message, code=ErrorCode.COMMAND_FORBIDDEN)


def check_role_target(actor: ActorFacts, role: RoleFacts, new: Level) -> None:
    """Refuse giving ``role`` the level ``new`` when the hierarchy does not allow it (see the module docstring).

    Parameters
    ----------
    actor:
        The member asking.
    role:
        The role whose level would change.
    new:
        The level asked for (``EVERYONE`` removes a grant).

    Raises
    ------
    CommandError
        ``COMMAND_FORBIDDEN`` with a message saying which rule refused.
    """
    if not (actor.is_guild_owner or actor.manage_roles):
        raise _forbid("Giving a role a level needs Discord's Manage Roles permission, as well as the bot level.")
    if new > Level.EVERYONE and role.is_default:
        raise _forbid("@everyone can't have a level: every member of the server would get it.")
    if new > Level.EVERYONE and role.managed:
        raise _forbid(f"{role.name} is managed by Discord or an integration (a bot's role or the booster role), "
                      "so nobody here controls who has it; it can't have a level.")
    if actor.is_guild_owner:
        return
    if not is_below(role, actor.top_role):
        where = "your highest role" if role.id == actor.top_role.id else "above your highest role"
        raise _forbid(f"{role.name} is {where} ({actor.top_role.name}); you can only change roles below it.")
