"""The bus actions every cluster answers, written against discord.py's bot API.

:func:`register_cluster_handlers` adds them to the cluster's :class:`~ipc.registry.HandlerRegistry`:

``ping``
    ``{"pong": true, "ready": bool, "latency_ms": float | null}``.
``guild_count``
    The number of guilds this cluster holds.
``shard_status``
    One entry per shard: id, latency, whether its socket is closed or rate limited, its guilds.
``reload_extension``
    ``{"name": "shard.cogs.settings"}``: reloads a loaded extension (discord.py rolls back on
    failure). Only full names inside the extension package that are loaded qualify
    (:mod:`innkeeper.extensions`; ``innkeeper reload settings`` expands the short form before it
    sends).
``cache_invalidate``
    ``{"namespace": str, "keys": [..] | null}``: drops this cluster's local copies in the
    :class:`~ipc.cache.SharedCache` (all of the namespace when ``keys`` is null).
``commands.cluster_status``
    This cluster's status for ``/status`` (:data:`shard.status_report.STATUS_ACTION`), when a
    ``local_status`` function is given.

Bad arguments raise :class:`~innkeeper.errors.UsageError`; the bus turns every error into an
error response with its code.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from innkeeper.errors import ErrorCode, IPCError, UsageError
from innkeeper.extensions import EXTENSION_PACKAGE, check_extension_name

from .status_report import STATUS_ACTION

if TYPE_CHECKING:
    from ipc.cache import SharedCache
    from ipc.registry import HandlerRegistry

__all__ = ("register_cluster_handlers",)


def _ms(seconds: float) -> float | None:
    return round(seconds * 1000, 1) if math.isfinite(seconds) else None


def register_cluster_handlers(registry: HandlerRegistry, bot: commands.AutoShardedBot, *,
                              cache: SharedCache | None = None, extension_package: str = EXTENSION_PACKAGE,
                              local_status: Callable[[], dict[str, Any]] | None = None,
                              reload_timeout: float = 30.0) -> None:
    """Register the standard actions (see the module docstring).

    Parameters
    ----------
    registry:
        Where to register them.
    bot:
        The cluster's bot.
    cache:
        The cluster's shared cache, for ``cache_invalidate``; without one that action answers an
        error.
    extension_package:
        The package whose extensions ``reload_extension`` may reload.
    local_status:
        Builds this cluster's answer to :data:`~shard.status_report.STATUS_ACTION`; without it the
        action is not registered.
    reload_timeout:
        Seconds a reload may take.
    """

    @registry.handler("ping")
    async def ping(args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "ready": bot.is_ready(), "latency_ms": _ms(bot.latency)}

    @registry.handler("guild_count")
    async def guild_count(args: dict[str, Any]) -> int:
        return len(bot.guilds)

    @registry.handler("shard_status")
    async def shard_status(args: dict[str, Any]) -> list[dict[str, Any]]:
        per_shard = collections.Counter(g.shard_id for g in bot.guilds)
        return [{"id": sid, "latency_ms": _ms(info.latency), "closed": info.is_closed(),
                 "ratelimited": info.is_ws_ratelimited(), "guilds": per_shard.get(sid, 0)}
                for sid, info in sorted(bot.shards.items())]

    @registry.handler("reload_extension", timeout=reload_timeout)
    async def reload_extension(args: dict[str, Any]) -> dict[str, Any]:
        name = check_extension_name(args.get("name"), extension_package)
        if name not in bot.extensions:
            raise IPCError(f"extension {name!r} is not loaded on this cluster", code=ErrorCode.NOT_FOUND)
        try:
            await bot.reload_extension(name)
        except commands.ExtensionFailed as exc:
            cause = exc.original
            raise IPCError(f"reloading {name!r} failed, the old version stays: {type(cause).__name__}: {cause}",
                           code=ErrorCode.COMMAND_FAILED) from exc
        except commands.ExtensionError as exc:
            raise IPCError(f"reloading {name!r} failed, the old version stays: {exc}",
                           code=ErrorCode.COMMAND_FAILED) from exc
        return {"reloaded": name}

    @registry.handler("cache_invalidate")
    async def cache_invalidate(args: dict[str, Any]) -> dict[str, Any]:
        if cache is None:
            raise IPCError("this cluster has no shared cache", code=ErrorCode.NOT_FOUND)
        namespace, keys = args.get("namespace"), args.get("keys")
        if not isinstance(namespace, str):
            raise UsageError("cache_invalidate needs a 'namespace' string")
        if keys is not None and (not isinstance(keys, list) or not all(isinstance(k, str | int) for k in keys)):
            raise UsageError("cache_invalidate 'keys' must be a list of strings or integers, or null")
        return {"dropped": cache.drop_local(namespace, keys)}

    if local_status is not None:
        status = local_status

        @registry.handler(STATUS_ACTION, timeout=2.0)
        async def cluster_status(args: dict[str, Any]) -> dict[str, Any]:
            return status()
