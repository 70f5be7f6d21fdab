"""The simulator's synthetic Discord: guilds, channels, roles, members and users, all from one seed.

Nothing big is stored. A :class:`World` keeps one small :class:`Guild` record per guild; channels,
roles, member lists and users are derived on demand from the seed with an integer mixer, so a world
of 10,000 guilds builds in milliseconds and costs a few megabytes. Every id is a real snowflake:

- guild ``i`` gets a timestamp in 2016–2024, strictly increasing with ``i`` and jittered inside its
  slot, so ``(guild_id >> 22) % num_shards`` spreads guilds evenly over shards, as on Discord;
- a guild's channels and roles share its timestamp with worker bits 1 and 2 and the position as
  increment; ``@everyone`` has the guild's id;
- users come from one shared pool (worker bits 3) with increasing timestamps, so an id maps back to
  its pool index in O(1). A guild's members are an arithmetic progression through the pool with a
  stride coprime to the pool size: distinct, deterministic and invertible.

The bot (``Innkeeper``, id = application id) is a member of every guild but never listed in
:attr:`Guild.member_ids`; GUILD_CREATE carries the listed members plus the bot.
"""

from __future__ import annotations

import math
import random
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .snowflakes import iso as _iso
from .snowflakes import shard_for, snowflake
from .world_model import CHANNEL_CATEGORY, CHANNEL_TEXT, CHANNEL_VOICE, Channel, Guild, Perm, Role

if TYPE_CHECKING:
    from .config import SimConfig

__all__ = ("World",)

_YEAR_MS = 31_536_000_000
#: Guild creation times: 2016-01-01 .. 2024-01-01 (ms after the Discord epoch).
_GUILD_T0, _GUILD_SPAN = _YEAR_MS, 8 * _YEAR_MS
#: User creation times: 2015-02 .. 2023-12.
_USER_T0, _USER_SPAN = 3_000_000_000, 8 * _YEAR_MS
#: Everyone joined before this instant (2025-01-01).
_JOIN_LIMIT_MS = 10 * _YEAR_MS
_W_GUILD, _W_CHANNEL, _W_ROLE, _W_USER, _W_BOT = 0, 1, 2, 3, 4

#: Shard counts above this are not cached as a per-shard table.
_MAX_SPLIT = 4096

_ADJ = ("amber", "brave", "calm", "dusty", "eager", "fierce", "gentle", "hidden", "icy", "jolly", "keen", "lucky",
        "merry", "noble", "odd", "proud", "quiet", "rusty", "silver", "tidy", "umber", "vivid", "wild", "young",
        "zesty", "bold", "crisp", "deft", "fancy", "grand", "hardy", "ivory")
_NOUN = ("otter", "badger", "falcon", "lantern", "tankard", "hearth", "barrel", "raven", "stag", "willow", "anvil",
         "harbor", "meadow", "comet", "thistle", "kettle", "fox", "heron", "lynx", "marten", "quill", "saddle",
         "tavern", "wagon", "bramble", "cinder", "dragon", "ember", "ferret", "goblet", "hound", "iris")
_TOPICS = (None, "Say hello!", "House rules are pinned.", "Off-topic chatter", None, "Bot commands welcome")
_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a fast, well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class World:
    """The deterministic world a simulator serves.

    Parameters
    ----------
    config:
        Uses ``seed``, ``guilds``, ``members_per_guild``, ``channels_per_guild`` and ``max_member_count``.
    """

    def __init__(self, config: SimConfig) -> None:
        if config.guilds < 1 or config.members_per_guild < 1 or config.channels_per_guild < 1:
            raise ValueError("guilds, members_per_guild and channels_per_guild must be >= 1")
        self.seed = config.seed
        self.members_per_guild = config.members_per_guild
        self.channels_per_guild = config.channels_per_guild
        self.max_member_count = config.max_member_count
        rng = random.Random(config.seed)
        self._salt = rng.getrandbits(64)
        n = config.guilds
        m = config.members_per_guild
        #: Users shared across guilds: every user is in about two guilds on average.
        self.pool_size = max(m, (n * m) // 2)
        self._user_step = _USER_SPAN // self.pool_size
        if self._user_step < 1:
            raise ValueError("too many users for the id space")
        bot_ms = 2 * _YEAR_MS + rng.randrange(_YEAR_MS)
        #: The bot user's id, which is also the application id.
        self.application_id = snowflake(bot_ms, _W_BOT, 0)
        self.bot_discriminator = f"{rng.randrange(1, 10_000):04d}"
        #: A human who owns the application (``/oauth2/applications/@me``).
        self.application_owner_id = self.user_id(rng.randrange(self.pool_size))
        step = _GUILD_SPAN // n
        if step < 1:
            raise ValueError("too many guilds for the id space")
        self._guild_step = step
        large_pick = rng.randrange(n)
        guilds: list[Guild] = []
        small_count = m + 1
        big_floor = max(1000, small_count + 1)
        for i in range(n):
            h = _mix(self._salt ^ (i * 0x9E3779B1 + 0x51ED))
            ms = _GUILD_T0 + i * step + h % step
            name = f"{_ADJ[(h >> 20) & 31].title()} {_NOUN[(h >> 25) & 31].title()} {i}"
            count = small_count
            if (i == large_pick or (h >> 40) % 100 == 0) and self.max_member_count >= big_floor:
                # Log-uniform between big_floor and max_member_count.
                frac = ((h >> 12) & 0xFFFF) / 0xFFFF
                count = int(big_floor * (self.max_member_count / big_floor) ** frac)
            guilds.append(Guild(self, i, snowflake(ms, _W_GUILD, 0), name, count, h))
        #: Every guild, sorted by id.
        self.guilds: list[Guild] = guilds
        self._by_shard: dict[int, list[list[Guild]]] = {}

    # -- lookups ---------------------------------------------------------------------------------

    def _guild_index(self, ms: int) -> int | None:
        offset = ms - _GUILD_T0
        if offset < 0:
            return None
        i = offset // self._guild_step
        return i if i < len(self.guilds) else None

    def guild(self, guild_id: int) -> Guild | None:
        """The guild with this id, or None."""
        i = self._guild_index(guild_id >> 22)
        if i is None:
            return None
        g = self.guilds[i]
        return g if g.id == guild_id else None

    def channel(self, channel_id: int) -> tuple[Guild, Channel] | None:
        """``(guild, channel)`` for a channel id, or None."""
        if (channel_id >> 17) & 0x1F != _W_CHANNEL:
            return None
        guild = self.guild(snowflake(channel_id >> 22))
        if guild is None:
            return None
        k = channel_id & 0xFFF
        channels = guild.channels
        if k >= len(channels) or channels[k].id != channel_id:
            return None
        return guild, channels[k]

    def role(self, guild: Guild, role_id: int) -> Role | None:
        for role in guild.roles:
            if role.id == role_id:
                return role
        return None

    def user_id(self, index: int) -> int:
        """The id of pool user ``index``."""
        h = _mix(self._salt ^ (index * 0xC2B2AE3D + 0x7F4A))
        ms = _USER_T0 + index * self._user_step + h % self._user_step
        return snowflake(ms, _W_USER, index & 0xFFF)

    def user_index(self, user_id: int) -> int | None:
        """The pool index of a human user id, or None when it is no user of this world."""
        if (user_id >> 17) & 0x1F != _W_USER:
            return None
        offset = (user_id >> 22) - _USER_T0
        if offset < 0:
            return None
        i = offset // self._user_step
        if i >= self.pool_size or self.user_id(i) != user_id:
            return None
        return i

    def user(self, user_id: int) -> dict[str, Any] | None:
        """The user object (human or the bot), or None."""
        if user_id == self.application_id:
            return self.bot_user()
        i = self.user_index(user_id)
        return None if i is None else self._user_payload(i, user_id)

    def _user_payload(self, index: int, user_id: int) -> dict[str, Any]:
        h = _mix(self._salt ^ (index * 0x165667B1 + 0x3C6E))
        adj, noun = _ADJ[h & 31], _NOUN[(h >> 5) & 31]
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

    def is_member(self, guild: Guild, user_id: int) -> bool:
        """Whether ``user_id`` is a listed (human) member of ``guild``."""
        i = self.user_index(user_id)
        if i is None:
            return False
        start, stride = self._progression(guild)
        k = ((i - start) * pow(stride, -1, self.pool_size)) % self.pool_size
        return k < self.members_per_guild

    def member(self, guild_id: int, user_id: int) -> dict[str, Any] | None:
        """The member object (with ``user``) of ``user_id`` in ``guild_id``, the bot included; or None."""
        guild = self.guild(guild_id)
        if guild is None:
            return None
        if user_id == self.application_id:
            return self._bot_member(guild)
        if not self.is_member(guild, user_id):
            return None
        return self._member_payload(guild, user_id)

    # -- routing ---------------------------------------------------------------------------------

    @staticmethod
    def shard_for(guild_id: int, num_shards: int) -> int:
        return shard_for(guild_id, num_shards)

    def guilds_for_shard(self, shard_id: int, num_shards: int) -> list[Guild]:
        """The guilds whose events go to ``shard_id`` of ``num_shards`` (sorted by id)."""
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ValueError(f"invalid shard {shard_id} of {num_shards}")
        if num_shards > _MAX_SPLIT:  # no table for absurd counts: filter instead
            return [g for g in self.guilds if (g.id >> 22) % num_shards == shard_id]
        split = self._by_shard.get(num_shards)
        if split is None:
            split = [[] for _ in range(num_shards)]
            for g in self.guilds:
                split[(g.id >> 22) % num_shards].append(g)
            if len(self._by_shard) > 16:  # a handful of shard counts at most; keep memory bounded
                self._by_shard.clear()
            self._by_shard[num_shards] = split
        return split[shard_id]

    # -- derived parts ---------------------------------------------------------------------------

    def _progression(self, guild: Guild) -> tuple[int, int]:
        """(start, stride) of the guild's members in the user pool; stride is coprime to the pool."""
        pool = self.pool_size
        h = _mix(guild._h ^ 0xA5A5)
        start = h % pool
        if pool == 1:
            return start, 1
        stride = 1 + (h >> 32) % (pool - 1)
        while math.gcd(stride, pool) != 1:
            stride = stride % (pool - 1) + 1
        return start, stride

    def _make_channels(self, guild: Guild) -> tuple[Channel, ...]:
        k = self.channels_per_guild
        n_voice = 1 if k >= 2 else 0
        n_cat = 1 if k >= 4 else 0
        n_text = k - n_voice - n_cat
        ms = guild.created_ms
        gid = guild.id
        parent = snowflake(ms, _W_CHANNEL, k - 1) if n_cat else None
        out: list[Channel] = []
        for t in range(n_text):
            name = "general" if t == 0 else f"{_NOUN[(guild._h >> (t % 50)) & 31]}-{t}"
            topic = _TOPICS[(guild._h >> (t % 40)) % len(_TOPICS)]
            out.append(Channel(snowflake(ms, _W_CHANNEL, t), gid, CHANNEL_TEXT, name, t, parent, topic))
        if n_voice:
            out.append(Channel(snowflake(ms, _W_CHANNEL, n_text), gid, CHANNEL_VOICE, "Lounge", n_text, parent,
                               None))
        if n_cat:
            out.append(Channel(snowflake(ms, _W_CHANNEL, k - 1), gid, CHANNEL_CATEGORY, "Tavern", 0, None, None))
        return tuple(out)

    def _make_roles(self, guild: Guild) -> tuple[Role, ...]:
        ms, h = guild.created_ms, guild._h
        return (
            Role(guild.id, "@everyone", Perm.EVERYONE, 0, 0),
            Role(snowflake(ms, _W_ROLE, 1), "Member", 0, 1, (h >> 8) & 0xFFFFFF, mentionable=True),
            Role(snowflake(ms, _W_ROLE, 2), "Moderator", Perm.MODERATOR, 2, 0x3498DB, hoist=True, mentionable=True),
            Role(snowflake(ms, _W_ROLE, 3), "Admin", Perm.ADMINISTRATOR, 3, 0xE74C3C, hoist=True),
            Role(snowflake(ms, _W_ROLE, 4), "Innkeeper", Perm.BOT, 4, 0, managed=True, bot_id=self.application_id),
        )

    def _member_roles(self, guild: Guild, user_id: int, owner_id: int) -> list[str]:
        ms = guild.created_ms
        member_role = str(snowflake(ms, _W_ROLE, 1))
        if user_id == owner_id:
            return [str(snowflake(ms, _W_ROLE, 3)), member_role]
        h = _mix(guild._h ^ user_id)
        if h % 10 == 0:
            return [str(snowflake(ms, _W_ROLE, 2)), member_role]
        return [member_role] if h % 3 else []

    def _joined_at(self, guild: Guild, user_id: int) -> str:
        created = guild.created_ms
        span = max(1, _JOIN_LIMIT_MS - created)
        return _iso(created + _mix(guild._h ^ user_id ^ 0x10) % span)

    def _member_payload(self, guild: Guild, user_id: int, owner_id: int | None = None) -> dict[str, Any]:
        i = self.user_index(user_id)
        assert i is not None
        owner = guild.owner_id if owner_id is None else owner_id
        return {"user": self._user_payload(i, user_id), "roles": self._member_roles(guild, user_id, owner),
                "joined_at": self._joined_at(guild, user_id), "premium_since": None, "deaf": False, "mute": False,
                "flags": 0, "pending": False, "nick": None, "avatar": None, "banner": None,
                "communication_disabled_until": None}

    def _bot_member(self, guild: Guild) -> dict[str, Any]:
        return {"user": self.bot_user(), "roles": [str(snowflake(guild.created_ms, _W_ROLE, 4))],
                "joined_at": self._joined_at(guild, self.application_id), "premium_since": None, "deaf": False,
                "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None, "banner": None,
                "communication_disabled_until": None}

    def member_payloads(self, guild: Guild) -> list[dict[str, Any]]:
        """Every listed member's object (humans only; see :meth:`member` for the bot)."""
        owner = guild.owner_id
        return [self._member_payload(guild, uid, owner) for uid in guild.member_ids]

    # -- payloads --------------------------------------------------------------------------------

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

    def ready_guilds(self, shard_id: int, num_shards: int) -> list[dict[str, Any]]:
        """READY's ``guilds``: unavailable stubs for the shard's guilds."""
        return [{"id": str(g.id), "unavailable": True} for g in self.guilds_for_shard(shard_id, num_shards)]

    @cached_property
    def application(self) -> dict[str, Any]:
        """READY's ``application`` (id and flags: the privileged intents are enabled)."""
        return {"id": str(self.application_id), "flags": (1 << 13) | (1 << 15) | (1 << 19)}
