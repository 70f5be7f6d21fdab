"""The world as Discord's JSON: user, member, guild and channel objects, GUILD_CREATE and READY's parts.

Payloads are built when they are sent, from the records of :mod:`simulator.world_model` and the
seeded parts of :class:`~simulator.world_gen.SeededWorld`; nothing here is stored. (READY's
``application`` comes from :class:`~simulator.application.Application`, whose flags are state.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .jsontext import dumps
from .member_lists import members_json
from .world_gen import SeededWorld
from .world_model import LARGE_THRESHOLD

#: Every intent bit (a session that asked for everything).
ALL_INTENTS = (1 << 26) - 1
GUILD_PRESENCES_INTENT = 1 << 8
#: Above this many members GUILD_CREATE carries only the bot (and voice members), whatever the intents.
FULL_GUILD_CREATE_LIMIT = 75_000

if TYPE_CHECKING:
    from .world_model import Channel, Guild

__all__ = ("WorldPayloads", "ALL_INTENTS", "FULL_GUILD_CREATE_LIMIT")


class WorldPayloads(SeededWorld):
    """The payload builders of :class:`~simulator.world.World`: every object as discord.py parses it."""

    # -- users and members -----------------------------------------------------------------------

    def _user_payload(self, index: int, user_id: int) -> dict[str, Any]:
        adj, noun = self._user_name(index)
        return {"id": str(user_id), "username": f"{adj}_{noun}{index}", "discriminator": "0",
                "global_name": f"{adj.title()} {noun.title()}", "avatar": None, "bot": False,
                "public_flags": 0, "flags": 0, "banner": None, "accent_color": None,
                "avatar_decoration_data": None}

    def bot_user(self) -> dict[str, Any]:
        """The bot's own user object (READY's ``user``, ``GET /users/@me``)."""
        return {"id": str(self.application_id), "username": "Innkeeper", "discriminator": self.bot_discriminator,
                "global_name": None, "avatar": None, "bot": True, "verified": True, "mfa_enabled": False,
                "flags": 0, "public_flags": 0, "email": None, "locale": "en-US", "banner": None,
                "accent_color": None, "avatar_decoration_data": None}

    def _member_payload(self, guild: Guild, user_id: int, position: int) -> dict[str, Any]:
        i = self.user_index(user_id)
        assert i is not None
        return {"user": self._user_payload(i, user_id), "roles": self._member_roles(guild, user_id, position),
                "joined_at": self._joined_at(guild, user_id), "premium_since": None, "deaf": False, "mute": False,
                "flags": 0, "pending": False, "nick": None, "avatar": None, "banner": None,
                "communication_disabled_until": None}

    def _bot_member(self, guild: Guild) -> dict[str, Any]:
        return {"user": self.bot_user(), "roles": self._bot_roles(guild),
                "joined_at": self._joined_at(guild, self.application_id), "premium_since": None, "deaf": False,
                "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None, "banner": None,
                "communication_disabled_until": None}

    def member_payloads(self, guild: Guild, positions: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Member objects of the humans at ``positions`` (default: every current one; the bot is not among them).

        Linear in the members asked for: GUILD_MEMBERS_CHUNKs of big guilds are rendered by
        :mod:`simulator.member_lists` instead.
        """
        return [self._member_payload(guild, guild.member_id(k), k)
                for k in (guild.positions() if positions is None else positions)]

    def presence_payload(self, user_id: int, status: str, guild_id: int | None = None) -> dict[str, Any]:
        """A partial presence (GUILD_CREATE's ``presences``, chunks, PRESENCE_UPDATE without ``guild_id``)."""
        data: dict[str, Any] = {"user": {"id": str(user_id)}, "status": status, "activities": [],
                                "client_status": {"desktop": status} if status != "offline" else {}}
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return data

    # -- guilds and channels ---------------------------------------------------------------------

    def guild_payload(self, guild: Guild) -> dict[str, Any]:
        """The guild object as ``GET /guilds/{id}`` returns it (no channels, members or presences)."""
        return {
            "id": str(guild.id), "name": guild.name, "icon": None, "icon_hash": None, "splash": None,
            "discovery_splash": None, "owner_id": str(guild.owner_id), "afk_channel_id": None, "afk_timeout": 300,
            "widget_enabled": False, "widget_channel_id": None, "verification_level": 1,
            "default_message_notifications": 1, "explicit_content_filter": 2, "mfa_level": 0, "nsfw_level": 0,
            "roles": [r.payload() for r in guild.roles], "emojis": [], "stickers": [], "features": [],
            "application_id": None, "system_channel_id": str(guild.channels[0].id), "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "max_presences": None, "max_members": 500_000, "vanity_url_code": None, "description": None,
            "banner": None, "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "max_video_channel_users": 25, "max_stage_video_channel_users": 50, "nsfw": False,
            "premium_progress_bar_enabled": False, "incidents_data": None, "region": "deprecated",
        }

    def _guild_create_fields(self, guild: Guild, large_threshold: int) -> dict[str, Any]:
        """GUILD_CREATE's ``d`` without ``members`` and ``presences``."""
        data = self.guild_payload(guild)
        count = guild.member_count
        data.update(
            channels=[c.payload(with_guild_id=False) for c in guild.channels], member_count=count,
            large=count > large_threshold, unavailable=False, joined_at=self._joined_at(guild, self.application_id),
            threads=[], stage_instances=[], guild_scheduled_events=[], voice_states=[], soundboard_sounds=[],
            embedded_activities=[], lazy=True, application_command_counts={},
        )
        return data

    def guild_create_members(self, guild: Guild, intents: int, large_threshold: int) -> Iterator[int]:
        """The positions of the humans a GUILD_CREATE carries (the bot always comes on top).

        Discord's rule (``developers/events/gateway-events.mdx``, Guild Create and Request Guild
        Members): without GUILD_PRESENCES, or over 75,000 members, only the bot and members in voice
        (nobody is in voice here); over ``large_threshold``, the members who are online or have a role
        (nobody has a nickname); otherwise everyone.
        """
        count = guild.member_count
        if not intents & GUILD_PRESENCES_INTENT or count > FULL_GUILD_CREATE_LIMIT:
            return
        if count <= large_threshold:
            yield from guild.positions()
            return
        for k in guild.positions():
            index = self._pool_index(guild, k)
            if self.user_status(index) != "offline" or self._member_roles(guild, self.user_id(index), k):
                yield k

    def guild_create_payload(self, guild: Guild, intents: int = ALL_INTENTS,
                             large_threshold: int = LARGE_THRESHOLD) -> dict[str, Any]:
        """GUILD_CREATE's ``d`` for a session with these ``intents`` and ``large_threshold``.

        Members follow :meth:`guild_create_members`; ``presences`` carry the non-offline ones sent.
        The reference for :meth:`guild_create_json`, which sessions send.
        """
        data = self._guild_create_fields(guild, large_threshold)
        members: list[dict[str, Any]] = []
        presences: list[dict[str, Any]] = []
        for k in self.guild_create_members(guild, intents, large_threshold):
            uid = guild.member_id(k)
            members.append(self._member_payload(guild, uid, k))
            status = self.user_status(self._pool_index(guild, k))
            if status != "offline":
                presences.append(self.presence_payload(uid, status))
        members.append(self._bot_member(guild))
        data.update(members=members, presences=presences)
        return data

    def guild_create_json(self, guild: Guild, intents: int = ALL_INTENTS,
                          large_threshold: int = LARGE_THRESHOLD) -> str:
        """:meth:`guild_create_payload` as JSON text, its members rendered without a dict each."""
        head = dumps(self._guild_create_fields(guild, large_threshold))
        members, presences, _ = members_json(self, guild, self.guild_create_members(guild, intents, large_threshold),
                                             bot_member=self._bot_member(guild), presences=True, bot_presence=False)
        return f'{head[:-1]},"members":{members},"presences":{presences}}}'

    def channel_payload(self, channel: Channel) -> dict[str, Any]:
        """The channel object as REST returns it (with ``guild_id``)."""
        return channel.payload(with_guild_id=True)
