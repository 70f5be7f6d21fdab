"""Each shard's guild configurations, cached as soon as the shard is READY.

After a start, a reconnect with a fresh session or a reshard, this process holds no guild's
configuration. Without a prefetch the first message of each guild finds none: it must be parsed in
full (the lean message filter cannot tell whether it is a command), and it loads the guild's
configuration alone: three queries per guild, all at once when a burst arrives (a cluster of
1,000 guilds starts with 3,000 queries). :class:`ConfigPrefetch` loads the shard's guilds in
batches instead (:meth:`~shard.pipeline.store.GuildConfigStore.prefetch`: one Redis read, three
queries and one Redis write per 500 guilds), in the background, from the moment a shard's READY
payload arrives: it lists the shard's guilds, seconds before their GUILD_CREATEs are all in and
discord.py calls the shard ready (messages flow meanwhile).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from innkeeper.services import BackgroundTasks

if TYPE_CHECKING:
    from discord.ext import commands

    from .pipeline.store import GuildConfigStore

__all__ = ("ConfigPrefetch",)

_log = logging.getLogger(__name__)


class ConfigPrefetch:
    """Prefetches each READY shard's guild configurations.

    Parameters
    ----------
    bot:
        The cluster's bot (its READY parser is wrapped by :meth:`install`).
    store:
        The guild configuration store.
    """

    __slots__ = ("bot", "store", "prefetched", "_tasks")

    def __init__(self, bot: commands.AutoShardedBot, store: GuildConfigStore) -> None:
        self.bot = bot
        self.store = store
        #: Guild configurations cached by prefetching so far.
        self.prefetched = 0
        self._tasks = BackgroundTasks("config-prefetch")

    def install(self) -> None:
        """Wrap the bot's READY parser: each READY payload starts a prefetch of the guilds it lists."""
        parsers: dict[str, Callable[[Any], None]] | None = getattr(getattr(self.bot, "_connection", None),
                                                                  "parsers", None)
        if parsers is None or "READY" not in parsers:
            _log.warning("discord.py has no READY parser here: guild configurations load on first use")
            return
        parse = parsers["READY"]

        def ready(data: Any) -> None:
            self._on_ready_payload(data)
            parse(data)

        parsers["READY"] = ready

    async def start(self) -> None:
        """Nothing to start: :meth:`install` already follows READY payloads."""

    async def stop(self) -> None:
        await self._tasks.cancel()

    def _on_ready_payload(self, data: Any) -> None:
        try:
            shard = data.get("shard") or [0]
            shard_id = int(shard[0])
            guild_ids = [int(g["id"]) for g in data.get("guilds") or ()]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            _log.warning("a READY payload without a readable guild list: no prefetch")
            return
        if guild_ids:
            self._tasks.spawn(self.prefetch(shard_id, guild_ids), name=f"shard-{shard_id}")

    async def prefetch(self, shard_id: int, guild_ids: list[int]) -> None:
        """Cache the configurations of ``guild_ids`` (shard ``shard_id``'s) that are not cached yet."""
        started = time.perf_counter()
        done = await self.store.prefetch(guild_ids)
        self.prefetched += done
        _log.info("shard %d: %d of %d guild configurations prefetched in %.0f ms", shard_id, done, len(guild_ids),
                  (time.perf_counter() - started) * 1000.0, extra={"shard_id": shard_id})
