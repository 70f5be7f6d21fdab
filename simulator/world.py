"""The simulator's synthetic Discord: guilds, channels, roles, members and users, all from one seed.

:class:`World` is what the gateway, REST and control handlers use. It is built in layers, one module
each:

- :mod:`simulator.world_model`: the records (:class:`~simulator.world_model.Guild`, ``Channel``,
  ``Role``, ``Perm``);
- :mod:`simulator.world_gen`: the seeded generator and its id arithmetic
  (:class:`~simulator.world_gen.SeededWorld`);
- :mod:`simulator.world_payloads`: the JSON objects discord.py parses
  (:class:`~simulator.world_payloads.WorldPayloads`);
- this module: lookups by id and shard routing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .snowflakes import shard_for
from .world_payloads import WorldPayloads

if TYPE_CHECKING:
    from .config import SimConfig
    from .world_model import Channel, Guild, Role

__all__ = ("World",)

#: Shard counts above this are not cached as a per-shard table.
_MAX_SPLIT = 4096


class World(WorldPayloads):
    """The deterministic world a simulator serves.

    Parameters
    ----------
    config:
        Uses ``seed``, ``guilds``, ``members_per_guild``, ``channels_per_guild`` and ``max_member_count``.
    """

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self._by_shard: dict[int, list[list[Guild]]] = {}

    # -- lookups ---------------------------------------------------------------------------------

    def guild(self, guild_id: int) -> Guild | None:
        """The guild with this id, or None."""
        i = self._guild_index(guild_id >> 22)
        if i is None:
            return None
        g = self.guilds[i]
        return g if g.id == guild_id else None

    def channel(self, channel_id: int) -> tuple[Guild, Channel] | None:
        """``(guild, channel)`` for a channel id, or None."""
        slot = self._channel_slot(channel_id)
        if slot is None:
            return None
        guild_id, k = slot
        guild = self.guild(guild_id)
        if guild is None:
            return None
        channels = guild.channels
        if k >= len(channels) or channels[k].id != channel_id:
            return None
        return guild, channels[k]

    def role(self, guild: Guild, role_id: int) -> Role | None:
        for role in guild.roles:
            if role.id == role_id:
                return role
        return None

    def user(self, user_id: int) -> dict[str, Any] | None:
        """The user object (human or the bot), or None."""
        if user_id == self.application_id:
            return self.bot_user()
        i = self.user_index(user_id)
        return None if i is None else self._user_payload(i, user_id)

    def member(self, guild_id: int, user_id: int) -> dict[str, Any] | None:
        """The member object (with ``user``) of ``user_id`` in ``guild_id``, the bot included; or None."""
        guild = self.guild(guild_id)
        if guild is None:
            return None
        if user_id == self.application_id:
            return self._bot_member(guild)
        position = self.member_position(guild, user_id)
        if position is None:
            return None
        return self._member_payload(guild, user_id, position)

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

    def ready_guilds(self, shard_id: int, num_shards: int) -> list[dict[str, Any]]:
        """READY's ``guilds``: unavailable stubs for the shard's guilds."""
        return [{"id": str(g.id), "unavailable": True} for g in self.guilds_for_shard(shard_id, num_shards)]
