"""Permissions as Discord computes them: a member's in the guild, and in one channel after its overwrites.

:func:`channel_permissions` follows Discord's documented algorithm (``topics/permissions``,
"Permission Overwrites"): the guild's base permissions (``@everyone`` plus the member's roles;
the owner and ADMINISTRATOR get everything), then the channel's ``@everyone`` overwrite, then
every overwrite of the member's roles together (denies first, then allows), then the member's
own overwrite. A member who cannot view a channel has no permission in it at all.

The REST side uses it for the bot (``POST /channels/{id}/messages`` answers 403 50001 Missing
Access without VIEW_CHANNEL, 403 50013 Missing Permissions without SEND_MESSAGES), the control
API for INTERACTION_CREATE's ``app_permissions`` and ``member.permissions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .world_model import Perm

if TYPE_CHECKING:
    from .world_model import Channel, Guild

__all__ = ("ALL_PERMISSIONS", "member_permissions", "channel_permissions", "OVERWRITE_ROLE", "OVERWRITE_MEMBER")

#: Every permission bit Discord defines today (what ADMINISTRATOR grants).
ALL_PERMISSIONS = (1 << 51) - 1
#: ``permission_overwrites[].type``: a role, or a member.
OVERWRITE_ROLE, OVERWRITE_MEMBER = 0, 1


def member_permissions(guild: Guild, member: dict[str, Any]) -> int:
    """A member's guild permissions: @everyone plus their roles; ADMINISTRATOR grants all."""
    roles = {str(r.id): r for r in guild.roles}
    perms = roles[str(guild.id)].permissions if str(guild.id) in roles else 0
    for role_id in member.get("roles", ()):
        role = roles.get(str(role_id))
        if role is not None:
            perms |= role.permissions
    return ALL_PERMISSIONS if perms & Perm.ADMINISTRATOR else perms


def channel_permissions(guild: Guild, channel: Channel, member: dict[str, Any]) -> int:
    """A member's permissions in ``channel``: the guild's, then the channel's overwrites (see the module)."""
    user_id = str(member["user"]["id"])
    base = member_permissions(guild, member)
    if base == ALL_PERMISSIONS or user_id == str(guild.owner_id):
        return ALL_PERMISSIONS
    by_target = {str(o["id"]): o for o in channel.overwrites}
    perms = base
    everyone = by_target.get(str(guild.id))
    if everyone is not None:
        perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
    deny = allow = 0
    for role_id in member.get("roles", ()):
        role = by_target.get(str(role_id))
        if role is not None and role["type"] == OVERWRITE_ROLE:
            deny |= int(role["deny"])
            allow |= int(role["allow"])
    perms = (perms & ~deny) | allow
    own = by_target.get(user_id)
    if own is not None and own["type"] == OVERWRITE_MEMBER:
        perms = (perms & ~int(own["deny"])) | int(own["allow"])
    return perms if perms & Perm.VIEW_CHANNEL else 0
