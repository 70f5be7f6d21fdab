"""Guild snapshots of this cluster, saved to Redis for a restarted cluster to rehydrate from.

:func:`snapshot_from_guild` turns a ``discord.Guild`` into the compact, Discord-JSON-shaped map
:class:`~ipc.snapshots.GuildSnapshotStore` keeps. :class:`SnapshotService` saves every guild of the
cluster once it is READY, then every ``INNKEEPER_SNAPSHOT_INTERVAL`` seconds and on a clean
shutdown, in pipelined batches with a turn for the event loop in between; a guild the bot leaves is
forgotten at once. Each shard's guilds are also saved as soon as that shard has them all
(``on_shard_ready``), so a cluster that dies in its first minutes can still be rebuilt, and the
save at shutdown takes every guild known, ready or not. Redis being unreachable never stops the
cluster: a failed save is counted and said once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands
from prometheus_client import Counter, Gauge

from innkeeper.errors import InnkeeperError
from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from ipc.snapshots import GuildSnapshotStore

__all__ = ("SnapshotService", "snapshot_from_guild", "SNAPSHOT_BATCH")

_log = logging.getLogger(__name__)

#: Guild snapshots built and sent per Redis pipeline; the event loop gets a turn between batches.
SNAPSHOT_BATCH = 250
#: Seconds the final snapshot save may take at shutdown.
_FINAL_SAVE_TIMEOUT = 10.0

SNAPSHOTS_SAVED = Counter("innkeeper_snapshots_saved_total", "Guild snapshots written to Redis")
SNAPSHOT_SECONDS = Gauge("innkeeper_snapshot_save_seconds", "Duration of the last full snapshot save")
SNAPSHOT_FAILURES = Counter("innkeeper_snapshot_failures_total", "Snapshot saves that failed (Redis unreachable)")


def snapshot_from_guild(guild: discord.Guild) -> dict[str, Any]:
    """A compact, Discord-JSON-shaped snapshot of ``guild`` from discord.py's cache.

    Holds the guild's id, name, icon, owner, member count and shard id, its channels (id, type,
    name, position, parent, topic, nsfw, permission overwrites) and roles (id, name, position,
    permissions, colours, flags), and the bot's own member (its roles, for ``guild.me``). No other
    member is included.
    """
    channels: list[dict[str, Any]] = []
    for channel in guild.channels:
        overwrites = []
        for target, overwrite in channel.overwrites.items():
            allow, deny = overwrite.pair()
            is_role = isinstance(target, discord.Role) or getattr(target, "type", None) is discord.Role
            overwrites.append({"id": str(target.id), "type": 0 if is_role else 1, "allow": str(allow.value),
                               "deny": str(deny.value)})
        item: dict[str, Any] = {"id": str(channel.id), "type": channel.type.value, "name": channel.name,
                                "position": channel.position, "permission_overwrites": overwrites}
        if channel.category_id is not None:
            item["parent_id"] = str(channel.category_id)
        topic = getattr(channel, "topic", None)
        if topic is not None:
            item["topic"] = topic
        if isinstance(channel, discord.TextChannel):
            item["nsfw"] = channel.nsfw
        if isinstance(channel, discord.VoiceChannel | discord.StageChannel):  # discord.py requires both
            item["bitrate"] = channel.bitrate
            item["user_limit"] = channel.user_limit
        channels.append(item)
    roles = [{"id": str(r.id), "name": r.name, "position": r.position, "permissions": str(r.permissions.value),
              "color": r.colour.value, "colors": _role_colors(r), "hoist": r.hoist, "mentionable": r.mentionable,
              "managed": r.managed}
             for r in guild.roles]
    snapshot = {"id": str(guild.id), "name": guild.name, "icon": guild.icon.key if guild.icon else None,
                "owner_id": str(guild.owner_id) if guild.owner_id else None, "member_count": guild.member_count,
                "shard_id": guild.shard_id, "channels": channels, "roles": roles}
    self_id = guild._state.self_id  # guild.me raises before login
    me = guild.get_member(self_id) if self_id is not None else None
    if me is not None:  # the bot's own member: its roles give its permissions (guild.me) after a rebuild
        snapshot["members"] = [{
            "user": {"id": str(me.id), "username": me.name, "discriminator": me.discriminator,
                     "global_name": me.global_name, "avatar": me._user._avatar, "bot": me.bot},
            "roles": [str(r) for r in me._roles], "nick": me.nick, "flags": me._flags,
            "joined_at": me.joined_at.isoformat() if me.joined_at else None, "deaf": False, "mute": False,
        }]
    return snapshot


def _role_colors(role: discord.Role) -> dict[str, int | None]:
    """Discord's ``colors`` object, which discord.py 2.7 reads role colours from."""
    secondary, tertiary = role.secondary_colour, role.tertiary_colour
    return {"primary_color": role.colour.value, "secondary_color": secondary.value if secondary else None,
            "tertiary_color": tertiary.value if tertiary else None}


class SnapshotService:
    """Saves this cluster's guild snapshots (see the module docstring).

    Parameters
    ----------
    client:
        The cluster's bot: its guilds, readiness and ``on_guild_remove`` events.
    store:
        Where snapshots go.
    interval_s:
        Seconds between saves; 0 turns periodic and final saves off.
    """

    def __init__(self, client: commands.AutoShardedBot, store: GuildSnapshotStore, *,
                 interval_s: float = 300.0) -> None:
        self.client = client
        self.store = store
        self.interval_s = interval_s
        #: Snapshots written by the last full save, and when it finished (``time.time()``).
        self.last_saved = 0
        self.last_saved_at: float | None = None
        self._tasks = BackgroundTasks("snapshots")
        self._save_lock = asyncio.Lock()
        self._failing = False
        self._listening = False

    async def start(self) -> None:
        if self.interval_s > 0:
            self._tasks.every(self.interval_s, self._periodic_save, name="save",
                              wait_first=self.client.wait_until_ready, on_error=self._save_failed)
        if not self._listening:
            self.client.add_listener(self._on_guild_remove, "on_guild_remove")
            if self.interval_s > 0:
                self.client.add_listener(self._on_shard_ready, "on_shard_ready")
            self._listening = True

    async def stop(self) -> None:
        """Stop saving periodically; save every guild known once more."""
        if self._listening:
            self.client.remove_listener(self._on_guild_remove, "on_guild_remove")
            if self.interval_s > 0:
                self.client.remove_listener(self._on_shard_ready, "on_shard_ready")
            self._listening = False
        await self._tasks.cancel()
        # every guild known so far, ready or not: the next process resumes from these (shard/resume.py)
        if self.interval_s > 0 and self.client.guilds:
            try:
                async with asyncio.timeout(_FINAL_SAVE_TIMEOUT):
                    saved = await self.save()
                _log.info("saved %d guild snapshots at shutdown", saved)
            except (InnkeeperError, TimeoutError) as exc:
                _log.warning("guild snapshots not saved at shutdown: %s", exc)

    async def save(self, shard_id: int | None = None) -> int:
        """Save a snapshot of every available guild of this cluster, or of one shard; returns how many.

        Raises
        ------
        IPCError
            ``REDIS_UNAVAILABLE``.
        """
        async with self._save_lock:
            started = time.perf_counter()
            guilds = [g for g in self.client.guilds
                      if not g.unavailable and (shard_id is None or g.shard_id == shard_id)]
            saved = 0
            for first in range(0, len(guilds), SNAPSHOT_BATCH):
                batch = []
                for guild in guilds[first:first + SNAPSHOT_BATCH]:
                    try:
                        batch.append(snapshot_from_guild(guild))
                    except Exception:  # noqa: BLE001 - one odd guild must not stop the others
                        _log.exception("cannot snapshot guild %s; skipping it", guild.id)
                saved += await self.store.save_many(batch)
                await asyncio.sleep(0)
            SNAPSHOTS_SAVED.inc(saved)
            SNAPSHOT_SECONDS.set(time.perf_counter() - started)
            self.last_saved, self.last_saved_at = saved, time.time()
            return saved

    async def _periodic_save(self) -> None:
        saved = await self.save()
        if self._failing:
            _log.info("guild snapshots saved again")
        self._failing = False
        _log.debug("saved %d guild snapshots", saved)

    def _save_failed(self, exc: Exception) -> None:
        SNAPSHOT_FAILURES.inc()
        if not isinstance(exc, InnkeeperError):
            _log.error("saving guild snapshots failed", exc_info=exc)
        elif not self._failing:
            _log.warning("guild snapshots not saved (%s); trying again every %.0f s", exc, self.interval_s)
        self._failing = True

    async def _on_shard_ready(self, shard_id: int) -> None:
        """A shard has all its guilds: save them now, so a restart soon after can rebuild them."""
        try:
            saved = await self.save(shard_id)
        except Exception as exc:  # noqa: BLE001 - the periodic save tries again
            self._save_failed(exc)
            return
        _log.debug("saved %d guild snapshots of shard %d", saved, shard_id, extra={"shard_id": shard_id})

    async def _on_guild_remove(self, guild: discord.Guild) -> None:
        try:
            await self.store.delete(guild.id, guild.shard_id)
        except InnkeeperError as exc:
            _log.debug("could not forget the snapshot of guild %s: %s", guild.id, exc)
