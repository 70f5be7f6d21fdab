"""The building blocks of the simulated world: snowflakes, permission bits, channel and role records.

:mod:`simulator.world` composes them into guilds; they are split out to keep both modules small.
"""

from __future__ import annotations

import datetime
from typing import Any

__all__ = ("Perm", "Channel", "Role", "snowflake", "shard_for", "mix", "iso", "DISCORD_EPOCH_MS",
           "CHANNEL_TEXT", "CHANNEL_VOICE", "CHANNEL_CATEGORY")

DISCORD_EPOCH_MS = 1_420_070_400_000
_M64 = (1 << 64) - 1
CHANNEL_TEXT, CHANNEL_VOICE, CHANNEL_CATEGORY = 0, 2, 4


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
    MODERATOR = KICK_MEMBERS | BAN_MEMBERS | MANAGE_MESSAGES | MANAGE_NICKNAMES | MODERATE_MEMBERS
    BOT = EVERYONE | MANAGE_MESSAGES | MANAGE_CHANNELS | MANAGE_ROLES | KICK_MEMBERS | BAN_MEMBERS | MODERATE_MEMBERS


def mix(x: int) -> int:
    """splitmix64: a fast, well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def snowflake(ms: int, worker: int = 0, increment: int = 0) -> int:
    """A snowflake from milliseconds after the Discord epoch, worker bits and an increment."""
    return (ms << 22) | ((worker & 0x1F) << 17) | (increment & 0xFFF)


def shard_for(guild_id: int, num_shards: int) -> int:
    """The shard that receives a guild's events: ``(guild_id >> 22) % num_shards``."""
    return (guild_id >> 22) % num_shards


def iso(ms: int) -> str:
    """ISO 8601 timestamp (as Discord formats them) of ``ms`` after the Discord epoch."""
    when = datetime.datetime.fromtimestamp((ms + DISCORD_EPOCH_MS) / 1000, tz=datetime.UTC)
    return when.isoformat()


class Channel:
    """One guild channel; ``payload()`` renders it as Discord does."""

    __slots__ = ("id", "guild_id", "type", "name", "position", "parent_id", "topic")

    def __init__(self, id: int, guild_id: int, type: int, name: str, position: int,  # noqa: A002
                 parent_id: int | None, topic: str | None) -> None:
        self.id = id
        self.guild_id = guild_id
        self.type = type
        self.name = name
        self.position = position
        self.parent_id = parent_id
        self.topic = topic

    @property
    def is_text(self) -> bool:
        return self.type == CHANNEL_TEXT

    def payload(self, *, with_guild_id: bool = True) -> dict[str, Any]:
        """The channel object. GUILD_CREATE's ``channels`` omit ``guild_id``; REST includes it."""
        data: dict[str, Any] = {
            "id": str(self.id), "type": self.type, "name": self.name, "position": self.position,
            "permission_overwrites": [], "parent_id": str(self.parent_id) if self.parent_id else None,
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
