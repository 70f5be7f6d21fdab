"""The world as Discord's JSON: user, member, guild and channel objects, GUILD_CREATE and READY's parts.

Payloads are built when they are sent, from the records of :mod:`simulator.world_model` and the
seeded parts of :class:`~simulator.world_gen.SeededWorld`; nothing here is stored. (READY's
``application`` comes from :class:`~simulator.application.Application`, whose flags are state.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .world_gen import SeededWorld

if TYPE_CHECKING:
    from .world_model import Channel, Guild

__all__ = ("WorldPayloads",)


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

    def _member_payload(self, guild: Guild, user_id: int, owner_id: int | None = None) -> dict[str, Any]:
        i = self.user_index(user_id)
        assert i is not None
        owner = guild.owner_id if owner_id is None else owner_id
        return {"user": self._user_payload(i, user_id), "roles": self._member_roles(guild, user_id, owner),
                "joined_at": self._joined_at(guild, user_id), "premium_since": None, "deaf": False, "mute": False,
                "flags": 0, "pending": False, "nick": None, "avatar": None, "banner": None,
                "communication_disabled_until": None}

    def _bot_member(self, guild: Guild) -> dict[str, Any]:
        return {"user": self.bot_user(), "roles": self._bot_roles(guild),
                "joined_at": self._joined_at(guild, self.application_id), "premium_since": None, "deaf": False,
                "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None, "banner": None,
                "communication_disabled_until": None}

    def member_payloads(self, guild: Guild) -> list[dict[str, Any]]:
        """Every listed member's object (humans only; see :meth:`~simulator.world.World.member` for the bot)."""
        owner = guild.owner_id
        return [self._member_payload(guild, uid, owner) for uid in guild.member_ids]

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

    def guild_create_payload(self, guild: Guild) -> dict[str, Any]:
        """GUILD_CREATE's ``d``: the guild, its channels, roles and the listed members plus the bot."""
        data = self.guild_payload(guild)
        members = self.member_payloads(guild)
        members.append(self._bot_member(guild))
        data.update(
            channels=[c.payload(with_guild_id=False) for c in guild.channels], members=members,
            member_count=guild.member_count, large=guild.large, unavailable=False,
            joined_at=self._joined_at(guild, self.application_id), threads=[], stage_instances=[],
            guild_scheduled_events=[], voice_states=[], presences=[], soundboard_sounds=[], embedded_activities=[],
            lazy=True, application_command_counts={},
        )
        return data

    def channel_payload(self, channel: Channel) -> dict[str, Any]:
        """The channel object as REST returns it (with ``guild_id``)."""
        return channel.payload(with_guild_id=True)
