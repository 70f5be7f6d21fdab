"""``ClusterBot``: the ``AutoShardedBot`` each cluster process runs over its shard range.

The bot stays a plain discord.py bot. It is given, in its constructor, what it hooks into
discord.py and nothing else: the identify gate (``before_identify_hook`` and the launch of its
shards), the commands' dependencies (the prefix, alias expansion, the pipeline's error handlers,
and ``deps`` for the cogs), and the cluster's :class:`~innkeeper.services.ServiceStack`, which
:meth:`ClusterBot.setup_hook` starts after the extensions load and :meth:`ClusterBot.close` stops
before the shards disconnect. ``shard/assembly.py`` builds all of it; no part of the process
finds another through the bot.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from .event_guard import event_failed
from .launch import launch_shards
from .pipeline.context import PipelineContext
from .pipeline.prefixes import AliasExpander, ConfigHook, PrefixResolver

if TYPE_CHECKING:
    from innkeeper.services import ServiceStack

    from .identify import IdentifyGate
    from .pipeline.core import Pipeline
    from .pipeline.deps import CommandDeps
    from .resume import Resumer
    from .session_keeper import SessionKeeper

__all__ = ("ClusterBot", "build_intents")

_log = logging.getLogger(__name__)


def build_intents() -> discord.Intents:
    """The intents a large bot needs: guilds and messages, no presences, no member list."""
    intents = discord.Intents.default()
    intents.message_content = True  # prefix commands
    intents.members = False
    intents.presences = False
    intents.typing = False
    return intents


class ClusterBot(commands.AutoShardedBot):
    """One cluster's bot.

    Parameters
    ----------
    deps:
        The commands' dependencies (the cogs read them as ``bot.deps``).
    identify:
        The cluster's identify gate; ``None`` keeps discord.py's own identify pacing.
    services:
        The cluster's services, started in :meth:`setup_hook` and stopped in :meth:`close`.
    cluster_id:
        This cluster's index in the plan.
    shard_ids:
        The shards this cluster runs, or ``None`` to run every shard.
    shard_count:
        The bot's total shard count, or ``None`` to ask ``GET /gateway/bot``.
    extensions:
        Extensions to load in :meth:`setup_hook` (the cluster loads :data:`shard.cogs.EXTENSIONS`).
    on_guild_config:
        Called by the prefix lookup with each guild message's guild id and that guild's configuration
        (automod's messages that waited for it, see :class:`~shard.lean_messages.LeanMessages`).
    resumer:
        RESUMEs the sessions a previous process of this cluster left (:mod:`shard.resume`); None
        identifies every shard.
    sessions:
        Keeps the shards' sessions in Redis; :meth:`close` parks the shards through it first
        (sockets closed resumably, exact sequences saved), so the next process resumes.
    """

    def __init__(
        self,
        *,
        deps: CommandDeps,
        identify: IdentifyGate | None,
        services: ServiceStack,
        cluster_id: int = 0,
        shard_ids: Sequence[int] | None = None,
        shard_count: int | None = None,
        extensions: Sequence[str] = (),
        on_guild_config: ConfigHook | None = None,
        resumer: Resumer | None = None,
        sessions: SessionKeeper | None = None,
        **options: Any,
    ) -> None:
        if shard_ids is not None:
            options["shard_ids"] = list(shard_ids)
        super().__init__(
            command_prefix=PrefixResolver(deps.settings.default_prefix, deps.guild_config, on_guild_config),
            intents=build_intents(),
            shard_count=shard_count,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
            max_messages=1000,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=True),
            **options,
        )
        self.deps = deps
        self.pipeline: Pipeline = deps.pipeline
        self.cluster_id = cluster_id
        self.fatal_error: BaseException | None = None
        self._identify = identify
        self._services = services
        self._aliases = AliasExpander(deps.aliases, deps.guild_config)
        self._extensions = tuple(extensions)
        self._resumer = resumer
        self._sessions = sessions
        if resumer is not None:
            resumer.attach(self)
        self.tree.error(self.pipeline.on_app_command_error)

    # --- lifecycle ------------------------------------------------------------------------------
    async def setup_hook(self) -> None:
        for name in self._extensions:
            await self.load_extension(name)
        # The application command sync is one of the services (shard/command_sync.py): in the background,
        # only when the tree changed, retried on failure. A failed sync never stops the cluster.
        await self._services.start()

    async def launch_shards(self) -> None:
        # One lane per identify bucket, the lanes concurrently (shard/launch.py); discord.py's own
        # launch connects the shards one after the other, which serialises the buckets.
        if self._identify is None:
            await super().launch_shards()
        else:
            await launch_shards(self, self._identify, self._resumer)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self._identify is None:
            await super().before_identify_hook(shard_id, initial=initial)
        else:
            await self._identify.before_identify(shard_id, initial=initial, connect_timeout=self.shard_connect_timeout)

    async def close(self) -> None:
        # First no more events: the sockets close resumably and each session is saved with the last
        # sequence read (a fatal gateway error left nothing to resume, so the sessions stay as they are).
        if self._sessions is not None and not self.is_closed() and self.fatal_error is None:
            await self._sessions.park()
        await self._services.stop()
        await super().close()

    async def give_up(self, error: BaseException) -> None:
        """Record a failure the process cannot recover from, and close (``python -m shard`` exits 1)."""
        self.fatal_error = error
        await self.close()

    # --- events ---------------------------------------------------------------------------------
    async def on_ready(self) -> None:
        _log.info("cluster %d ready: %d shards, %d guilds", self.cluster_id, len(self.shards), len(self.guilds))

    async def on_shard_ready(self, shard_id: int) -> None:
        _log.info("shard %d ready", shard_id, extra={"shard_id": shard_id})

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """A listener raised: count and log it (shard/event_guard.py); discord.py goes on with the next event."""
        exc = sys.exc_info()[1]
        if exc is None:  # called by hand, outside an except block
            return
        event_failed(event_method, "listener", exc, shard_id=_shard_of_args(args))

    async def get_context(self, origin: discord.Message | discord.Interaction[Any], /, *,
                          cls: type[commands.Context[Any]] = PipelineContext) -> Any:
        ctx = await super().get_context(origin, cls=cls)
        if isinstance(ctx, PipelineContext):
            ctx.refused_targets = self.deps.refused
        return await self._aliases.expand(ctx) if isinstance(origin, discord.Message) else ctx

    async def on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        await self.pipeline.on_command_error(ctx, error)


def _shard_of_args(args: Sequence[Any]) -> int | None:
    """The shard of a listener's first argument (a message, a guild, a member…), when it has one."""
    first = args[0] if args else None
    guild = first if isinstance(first, discord.Guild) else getattr(first, "guild", None)
    shard_id = getattr(guild, "shard_id", None)
    return shard_id if isinstance(shard_id, int) else None
