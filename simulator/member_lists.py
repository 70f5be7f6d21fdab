"""Member lists of any size, rendered straight to JSON: GUILD_MEMBERS_CHUNK bodies without a dict per member.

A 250,000-member guild is never held in memory. Its members are positions ``0 .. humans - 1`` of an
arithmetic progression through the user pool (:mod:`simulator.world_gen`); a chunk names a range of
positions and is rendered only when its frame is written to a socket. Rendering goes from the seeded
parts to JSON text through one template, several times faster than building and encoding the dicts
of :meth:`~simulator.world_payloads.WorldPayloads.member_payloads`, which stays the reference (a unit
test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .jsontext import dumps
from .world_gen import _ADJ, _NOUN

if TYPE_CHECKING:
    from .world_gen import SeededWorld
    from .world_model import Guild

__all__ = ("member_json", "members_json", "matches_query", "CHUNK_SIZE")

#: Members per GUILD_MEMBERS_CHUNK, as on Discord (``developers/events/gateway-events.mdx``).
CHUNK_SIZE = 1000

_MEMBER = ('{{"user":{{"id":"{uid}","username":"{adj}_{noun}{index}","discriminator":"0",'
           '"global_name":"{Adj} {Noun}","avatar":null,"bot":false,"public_flags":0,"flags":0,"banner":null,'
           '"accent_color":null,"avatar_decoration_data":null}},"roles":[{roles}],"joined_at":"{joined}",'
           '"premium_since":null,"deaf":false,"mute":false,"flags":0,"pending":false,"nick":null,"avatar":null,'
           '"banner":null,"communication_disabled_until":null}}')
_PRESENCE = '{{"user":{{"id":"{uid}"}},"status":"{status}","activities":[],"client_status":{{"desktop":"{status}"}}}}'


def member_json(world: SeededWorld, guild: Guild, position: int) -> tuple[str, str | None]:
    """The member object at ``position`` as JSON, and its presence as JSON (None when offline)."""
    index = world._pool_index(guild, position)
    uid = world.user_id(index)
    adj, noun = world._user_name(index)
    roles = ",".join(f'"{r}"' for r in world._member_roles(guild, uid, position))
    text = _MEMBER.format(uid=uid, adj=adj, noun=noun, index=index, Adj=adj.title(), Noun=noun.title(),
                          roles=roles, joined=world._joined_at(guild, uid))
    status = world.user_status(index)
    presence = None if status == "offline" else _PRESENCE.format(uid=uid, status=status)
    return text, presence


def members_json(world: SeededWorld, guild: Guild, positions: Iterable[int], *, bot_member: dict[str, Any] | None,
                 presences: bool, bot_presence: bool = True) -> tuple[str, str | None, int]:
    """``members`` (and ``presences`` when asked) of a chunk as JSON arrays, and how many members it holds.

    ``bot_member`` (the bot's own member object, which every whole member list includes) is appended
    when given; ``bot_presence`` says whether the bot's (online) presence goes with it.
    """
    parts: list[str] = []
    online: list[str] = []
    for k in positions:
        text, presence = member_json(world, guild, k)
        parts.append(text)
        if presence is not None:
            online.append(presence)
    if bot_member is not None:
        parts.append(dumps(bot_member))
        if bot_presence:
            online.append(_PRESENCE.format(uid=world.application_id, status="online"))
    members = "[" + ",".join(parts) + "]"
    return members, ("[" + ",".join(online) + "]") if presences else None, len(parts)


def matches_query(world: SeededWorld, guild: Guild, position: int, prefix: str) -> bool:
    """Whether the member at ``position`` has a username or display name starting with ``prefix`` (lower case)."""
    index = world._pool_index(guild, position)
    adj, noun = world._user_name(index)
    return f"{adj}_{noun}{index}".startswith(prefix) or f"{adj} {noun}".startswith(prefix)


# Every name part is plain ASCII without quotes or backslashes, so the template needs no escaping.
assert all(w.isalpha() and w.isascii() for w in (*_ADJ, *_NOUN))
