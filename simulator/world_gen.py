"""The seeded generator: guilds, channels, roles, members and users from one seed, and the ids that invert.

Nothing big is stored. A :class:`SeededWorld` keeps one small :class:`~simulator.world_model.Guild`
record per guild; channels, roles, member lists and users are derived on demand from the seed with an
integer mixer, so a world of 10,000 guilds builds in milliseconds and costs a few megabytes. Every id
is a real snowflake:

- guild ``i`` gets a timestamp in 2016–2024, strictly increasing with ``i`` and jittered inside its
  slot, so ``(guild_id >> 22) % num_shards`` spreads guilds evenly over shards, as on Discord;
- a guild's channels and roles share its timestamp with worker bits 1 and 2 and the position as
  increment; ``@everyone`` has the guild's id;
- users come from one shared pool (worker bits 3) with increasing timestamps, so an id maps back to
  its pool index in O(1). A guild's members are an arithmetic progression through the pool with a
  stride coprime to the pool size: distinct, deterministic and invertible.

The bot (``Innkeeper``, id = application id) is a member of every guild but never listed in
:attr:`Guild.member_ids <simulator.world_model.Guild.member_ids>`.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from .snowflakes import iso, snowflake
from .world_model import CHANNEL_CATEGORY, CHANNEL_TEXT, CHANNEL_VOICE, Channel, Guild, Perm, Role

if TYPE_CHECKING:
    from .config import SimConfig

__all__ = ("SeededWorld",)

_YEAR_MS = 31_536_000_000
#: Guild creation times: 2016-01-01 .. 2024-01-01 (ms after the Discord epoch).
_GUILD_T0, _GUILD_SPAN = _YEAR_MS, 8 * _YEAR_MS
#: User creation times: 2015-02 .. 2023-12.
_USER_T0, _USER_SPAN = 3_000_000_000, 8 * _YEAR_MS
#: Everyone joined before this instant (2025-01-01).
_JOIN_LIMIT_MS = 10 * _YEAR_MS
_W_GUILD, _W_CHANNEL, _W_ROLE, _W_USER, _W_BOT = 0, 1, 2, 3, 4

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


class SeededWorld:
    """The guilds, users and application of one seed, and the id arithmetic behind them.

    :class:`~simulator.world.World` adds lookups, shard routing and payloads on top.

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

    # -- ids and their inverses ------------------------------------------------------------------

    def _guild_index(self, ms: int) -> int | None:
        """The index of the guild whose id carries timestamp ``ms``, if one could."""
        offset = ms - _GUILD_T0
        if offset < 0:
            return None
        i = offset // self._guild_step
        return i if i < len(self.guilds) else None

    @staticmethod
    def _channel_slot(channel_id: int) -> tuple[int, int] | None:
        """``(guild id, position)`` that a channel id encodes, or None for an id with other worker bits."""
        if (channel_id >> 17) & 0x1F != _W_CHANNEL:
            return None
        return snowflake(channel_id >> 22), channel_id & 0xFFF

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

    def is_member(self, guild: Guild, user_id: int) -> bool:
        """Whether ``user_id`` is a listed (human) member of ``guild``."""
        i = self.user_index(user_id)
        if i is None:
            return False
        start, stride = self._progression(guild)
        k = ((i - start) * pow(stride, -1, self.pool_size)) % self.pool_size
        return k < self.members_per_guild

    # -- derived parts ---------------------------------------------------------------------------

    def _user_name(self, index: int) -> tuple[str, str]:
        """The adjective and noun that pool user ``index``'s names are made of."""
        h = _mix(self._salt ^ (index * 0x165667B1 + 0x3C6E))
        return _ADJ[h & 31], _NOUN[(h >> 5) & 31]

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

    def _bot_roles(self, guild: Guild) -> list[str]:
        """The bot's roles in ``guild``: its managed role."""
        return [str(snowflake(guild.created_ms, _W_ROLE, 4))]

    def _joined_at(self, guild: Guild, user_id: int) -> str:
        created = guild.created_ms
        span = max(1, _JOIN_LIMIT_MS - created)
        return iso(created + _mix(guild._h ^ user_id ^ 0x10) % span)
