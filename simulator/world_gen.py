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
#: Presence shares in percent (the rest is offline).
_ONLINE_PCT, _IDLE_PCT, _DND_PCT = 10, 4, 2
#: The first members of a guild, where roles are common; further down few members have one.
_CORE_MEMBERS = 100

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
        step = _GUILD_SPAN // n
        if step < 1:
            raise ValueError("too many guilds for the id space")
        self._guild_step = step
        hashes = [_mix(self._salt ^ (i * 0x9E3779B1 + 0x51ED)) for i in range(n)]
        humans = self._sizes(config, hashes, rng)
        #: Users shared across guilds: every user is in about two guilds on average; with realistic sizes
        #: the pool is at least twice the largest guild, so even the largest has outsiders and room to grow.
        self.pool_size = max(config.members_per_guild, sum(humans) // 2,
                             2 * max(humans) if config.guild_sizes == "realistic" else 0)
        self._user_step = _USER_SPAN // self.pool_size
        if self._user_step < 1:
            raise ValueError("too many users for the id space")
        bot_ms = 2 * _YEAR_MS + rng.randrange(_YEAR_MS)
        #: The bot user's id, which is also the application id.
        self.application_id = snowflake(bot_ms, _W_BOT, 0)
        self.bot_discriminator = f"{rng.randrange(1, 10_000):04d}"
        #: A human who owns the application (``/oauth2/applications/@me``).
        self.application_owner_id = self.user_id(rng.randrange(self.pool_size))
        guilds: list[Guild] = []
        for i, h in enumerate(hashes):
            ms = _GUILD_T0 + i * step + h % step
            name = f"{_ADJ[(h >> 20) & 31].title()} {_NOUN[(h >> 25) & 31].title()} {i}"
            guilds.append(Guild(self, i, snowflake(ms, _W_GUILD, 0), name, humans[i], h))
        #: Every guild, sorted by id.
        self.guilds: list[Guild] = guilds

    @staticmethod
    def _sizes(config: SimConfig, hashes: list[int], rng: random.Random) -> list[int]:
        """Human members per guild (the bot comes on top).

        ``fixed``: ``members_per_guild`` each. ``realistic``: a Pareto spread with tail exponent
        ``size_tail`` whose median is ``members_per_guild``, at most ``max_member_count - 1``; with
        tail 1 and median 20, 90 % of guilds have under 100 members, 1 % over 1,000 and 0.1 % over
        10,000. ``huge_guilds`` guilds, picked by the seed, get exactly ``max_member_count - 1``.
        """
        m = config.members_per_guild
        if config.guild_sizes == "fixed":
            return [m] * len(hashes)
        alpha = config.size_tail
        cap = config.max_member_count - 1
        floor = m / 2 ** (1 / alpha)  # the Pareto scale whose median is m
        sizes = []
        for h in hashes:
            u = ((h >> 11) & 0xFFFFFFFFF) / 0x1000000000 or 1e-12  # uniform in (0, 1)
            sizes.append(max(1, min(cap, int(floor * u ** (-1 / alpha)))))
        for i in rng.sample(range(len(hashes)), min(config.huge_guilds, len(hashes))):
            sizes[i] = cap
        return sizes

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
        if guild._prog is not None:
            return guild._prog
        pool = self.pool_size
        h = _mix(guild._h ^ 0xA5A5)
        start = h % pool
        if pool == 1:
            guild._prog = (start, 1)
            return start, 1
        stride = 1 + (h >> 32) % (pool - 1)
        while math.gcd(stride, pool) != 1:
            stride = stride % (pool - 1) + 1
        guild._prog = (start, stride)
        return start, stride

    def _pool_index(self, guild: Guild, position: int) -> int:
        """The pool index of the user at ``position`` of ``guild``."""
        start, stride = self._progression(guild)
        return (start + position * stride) % self.pool_size

    def member_position(self, guild: Guild, user_id: int) -> int | None:
        """The position of human ``user_id`` in ``guild``'s member list (0 is the owner), or None."""
        i = self.user_index(user_id)
        if i is None:
            return None
        start, stride = self._progression(guild)
        k = ((i - start) * pow(stride, -1, self.pool_size)) % self.pool_size
        return k if guild.has_position(k) else None

    def is_member(self, guild: Guild, user_id: int) -> bool:
        """Whether ``user_id`` is a (human) member of ``guild`` now."""
        return self.member_position(guild, user_id) is not None

    def user_status(self, index: int) -> str:
        """The presence of pool user ``index``: offline for most, as on Discord (a user's status is global)."""
        r = _mix(self._salt ^ (index * 0x27D4EB2F + 0x9E37)) % 100
        if r < _ONLINE_PCT:
            return "online"
        if r < _ONLINE_PCT + _IDLE_PCT:
            return "idle"
        if r < _ONLINE_PCT + _IDLE_PCT + _DND_PCT:
            return "dnd"
        return "offline"

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

    def _member_roles(self, guild: Guild, user_id: int, position: int) -> list[str]:
        """Role ids of the member at ``position``: the owner is Admin; among the first hundred members one in
        ten is a Moderator and two in three have the Member role; further down roles are rare, as in big
        guilds (one in a thousand moderates, one in twenty has a role)."""
        ms = guild.created_ms
        member_role = str(snowflake(ms, _W_ROLE, 1))
        if position == 0:
            return [str(snowflake(ms, _W_ROLE, 3)), member_role]
        h = _mix(guild._h ^ user_id)
        if position < _CORE_MEMBERS:
            if h % 10 == 0:
                return [str(snowflake(ms, _W_ROLE, 2)), member_role]
            return [member_role] if h % 3 else []
        if h % 1000 == 0:
            return [str(snowflake(ms, _W_ROLE, 2)), member_role]
        return [member_role] if h % 20 == 0 else []

    def _bot_roles(self, guild: Guild) -> list[str]:
        """The bot's roles in ``guild``: its managed role."""
        return [str(snowflake(guild.created_ms, _W_ROLE, 4))]

    def _joined_at(self, guild: Guild, user_id: int) -> str:
        created = guild.created_ms
        span = max(1, _JOIN_LIMIT_MS - created)
        return iso(created + _mix(guild._h ^ user_id ^ 0x10) % span)
