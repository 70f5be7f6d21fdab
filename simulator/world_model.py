"""The simulated world's records: permission bits, channels, roles and guilds.

Records are small slotted classes; a :class:`Guild` derives its channels, roles and members from the
seeded world on first use, through the :class:`GuildSource` it was made by (in the simulator,
:class:`~simulator.world_gen.SeededWorld`, which builds on these records). ``Channel.payload()`` and
``Role.payload()`` render a record as Discord does; the payloads that need the whole world are in
:mod:`simulator.world_payloads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ("Perm", "Channel", "Role", "Guild", "GuildSource", "CHANNEL_TEXT", "CHANNEL_VOICE", "CHANNEL_CATEGORY",
           "LARGE_THRESHOLD")

CHANNEL_TEXT, CHANNEL_VOICE, CHANNEL_CATEGORY = 0, 2, 4
#: A guild reporting more members than this is ``large``.
LARGE_THRESHOLD = 250


class Perm:
    """Permission bits the world uses (Discord's values)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    USE_VAD = 1 << 25
    CHANGE_NICKNAME = 1 << 26
    MANAGE_NICKNAMES = 1 << 27
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    CREATE_PUBLIC_THREADS = 1 << 35
    SEND_MESSAGES_IN_THREADS = 1 << 38
    MODERATE_MEMBERS = 1 << 40

    EVERYONE = (CREATE_INSTANT_INVITE | ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
                | READ_MESSAGE_HISTORY | USE_EXTERNAL_EMOJIS | CONNECT | SPEAK | USE_VAD | CHANGE_NICKNAME
                | USE_APPLICATION_COMMANDS | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS)
    MODERATOR = KICK_MEMBERS | BAN_MEMBERS | MANAGE_MESSAGES | MANAGE_NICKNAMES | MANAGE_ROLES | MODERATE_MEMBERS
    BOT = EVERYONE | MANAGE_MESSAGES | MANAGE_CHANNELS | MANAGE_ROLES | KICK_MEMBERS | BAN_MEMBERS | MODERATE_MEMBERS


class Channel:
    """One guild channel; ``payload()`` renders it as Discord does.

    ``overwrites`` are its ``permission_overwrites`` (``{"id", "type", "allow", "deny"}``, ids and
    bit sets as strings, as Discord sends them): none in the generated world; the control API sets
    them (``POST /_sim/channels/{id}/overwrites``).
    """

    __slots__ = ("id", "guild_id", "type", "name", "position", "parent_id", "topic", "overwrites")

    def __init__(self, id: int, guild_id: int, type: int, name: str, position: int,  # noqa: A002
                 parent_id: int | None, topic: str | None) -> None:
        self.id = id
        self.guild_id = guild_id
        self.type = type
        self.name = name
        self.position = position
        self.parent_id = parent_id
        self.topic = topic
        self.overwrites: list[dict[str, Any]] = []

    @property
    def is_text(self) -> bool:
        return self.type == CHANNEL_TEXT

    def payload(self, *, with_guild_id: bool = True) -> dict[str, Any]:
        """The channel object. GUILD_CREATE's ``channels`` omit ``guild_id``; REST includes it."""
        data: dict[str, Any] = {
            "id": str(self.id), "type": self.type, "name": self.name, "position": self.position,
            "permission_overwrites": [dict(o) for o in self.overwrites],
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "nsfw": False, "flags": 0,
        }
        if self.type == CHANNEL_TEXT:
            data.update(topic=self.topic, rate_limit_per_user=0, last_message_id=None,
                        default_auto_archive_duration=1440)
        elif self.type == CHANNEL_VOICE:
            data.update(bitrate=64000, user_limit=0, rtc_region=None, rate_limit_per_user=0, last_message_id=None)
        if with_guild_id:
            data["guild_id"] = str(self.guild_id)
        return data


class Role:
    """One guild role; ``payload()`` renders it as Discord does."""

    __slots__ = ("id", "name", "permissions", "position", "color", "hoist", "managed", "mentionable", "bot_id")

    def __init__(self, id: int, name: str, permissions: int, position: int, color: int, *,  # noqa: A002
                 hoist: bool = False, managed: bool = False, mentionable: bool = False,
                 bot_id: int | None = None) -> None:
        self.id = id
        self.name = name
        self.permissions = permissions
        self.position = position
        self.color = color
        self.hoist = hoist
        self.managed = managed
        self.mentionable = mentionable
        self.bot_id = bot_id

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id), "name": self.name, "permissions": str(self.permissions), "position": self.position,
            "color": self.color, "colors": {"primary_color": self.color, "secondary_color": None,
                                            "tertiary_color": None},
            "hoist": self.hoist, "managed": self.managed, "mentionable": self.mentionable, "flags": 0,
            "icon": None, "unicode_emoji": None, "description": None,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


class GuildSource(Protocol):
    """What a :class:`Guild` derives its parts from: the seeded world that made it.

    :class:`~simulator.world_gen.SeededWorld` is the implementation.
    """

    @property
    def pool_size(self) -> int:
        """Users in the shared pool that members are drawn from."""
        ...


    def user_id(self, index: int) -> int:
        """The id of pool user ``index``."""
        ...

    def _progression(self, guild: Guild) -> tuple[int, int]:
        """(start, stride) of the guild's members in the user pool."""
        ...

    def _make_channels(self, guild: Guild) -> tuple[Channel, ...]: ...

    def _make_roles(self, guild: Guild) -> tuple[Role, ...]: ...


class Guild:
    """The compact record of one guild; channels, roles and members are derived on demand."""

    __slots__ = ("world", "index", "id", "name", "humans", "departed", "_h", "_channels", "_roles", "_prog")

    def __init__(self, world: GuildSource, index: int, guild_id: int, name: str, humans: int, h: int) -> None:
        self.world = world
        self.index = index
        self.id = guild_id
        self.name = name
        #: Human member positions ``0 .. humans - 1`` (0 is the owner); the bot comes on top.
        self.humans = humans
        #: Positions of members who left (GUILD_MEMBER_REMOVE) and have not come back; None while nobody left.
        self.departed: set[int] | None = None
        self._h = h
        self._channels: tuple[Channel, ...] | None = None
        self._roles: tuple[Role, ...] | None = None
        #: (start, stride) of the members in the user pool, once computed.
        self._prog: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"<Guild id={self.id} name={self.name!r} member_count={self.member_count}>"

    @property
    def created_ms(self) -> int:
        return self.id >> 22

    @property
    def member_count(self) -> int:
        """Members now, the bot included: what GUILD_CREATE reports and every member list adds up to."""
        departed = self.departed
        return self.humans + 1 - (len(departed) if departed else 0)

    @property
    def large(self) -> bool:
        """Large for a client that identified with the default ``large_threshold`` of 250."""
        return self.member_count > LARGE_THRESHOLD

    def has_position(self, position: int) -> bool:
        """Whether the human at ``position`` is a member now."""
        departed = self.departed
        return 0 <= position < self.humans and not (departed and position in departed)

    def member_id(self, position: int) -> int:
        """The user id at ``position`` of the member list (whether or not that member left)."""
        w = self.world
        start, stride = w._progression(self)
        return w.user_id((start + position * stride) % w.pool_size)

    def positions(self, start: int = 0, stop: int | None = None) -> Iterator[int]:
        """The positions of current human members in ``[start, stop)``, in order."""
        end = self.humans if stop is None else min(stop, self.humans)
        departed = self.departed
        if not departed:
            return iter(range(start, end))
        return (k for k in range(start, end) if k not in departed)

    @property
    def channels(self) -> tuple[Channel, ...]:
        """Text channels first (``channels[0]`` is always GUILD_TEXT), then a voice channel, then a category."""
        channels = self._channels
        if channels is None:
            channels = self._channels = self.world._make_channels(self)
        return channels

    @property
    def roles(self) -> tuple[Role, ...]:
        """``@everyone`` (id == guild id), Member, Moderator, Admin and the bot's managed role."""
        roles = self._roles
        if roles is None:
            roles = self._roles = self.world._make_roles(self)
        return roles

    @property
    def member_ids(self) -> list[int]:
        """The current human members (never the bot), the owner first; O(members), for small guilds and tests."""
        w = self.world
        start, stride = w._progression(self)
        pool = w.pool_size
        return [w.user_id((start + k * stride) % pool) for k in self.positions()]

    @property
    def owner_id(self) -> int:
        start, _ = self.world._progression(self)
        return self.world.user_id(start)

    @property
    def text_channel(self) -> Channel:
        return self.channels[0]
