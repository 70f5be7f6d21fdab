"""The standard bus actions every cluster answers, written against discord.py's bot API.

:func:`register_bot_handlers` adds them to a :class:`~ipc.registry.HandlerRegistry`:

``ping``
    ``{"pong": true, "ready": bool, "latency_ms": float | null}``.
``guild_count``
    The number of guilds this cluster holds.
``shard_status``
    One entry per shard: id, latency, whether its socket is closed or rate limited, its guilds.
``reload_extension``
    ``{"name": "shard.cogs.settings"}``: reloads a loaded extension (discord.py rolls back on
    failure). Only names under the allowed prefix (``shard.cogs.``) that are loaded qualify.
``cache_invalidate``
    ``{"namespace": str, "keys": [..] | null}``: drops this cluster's local copies in the
    :class:`~ipc.cache.SharedCache` (all of the namespace when ``keys`` is null).

Bad arguments raise :class:`~innkeeper.errors.UsageError`; the bus turns every error into an
error response with its code.
"""

from __future__ import annotations

import collections
import math
import re
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from innkeeper.errors import ErrorCode, IPCError, UsageError

if TYPE_CHECKING:
    from .cache import SharedCache
    from .registry import HandlerRegistry

__all__ = ("register_bot_handlers", "EXTENSION_PREFIX", "check_extension_name")

#: Only extensions under this package may be reloaded over the bus.
EXTENSION_PREFIX = "shard.cogs."

_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_extension_name(name: object, prefix: str = EXTENSION_PREFIX) -> str:
    """Return ``name`` if it is a dotted module name under ``prefix``; raise :class:`UsageError` otherwise."""
    if not isinstance(name, str) or len(name) > 200 or not _MODULE_RE.match(name):
        raise UsageError(f"not an extension name: {name!r}")
    if not name.startswith(prefix) or name == prefix.rstrip("."):
        raise UsageError(f"only extensions under {prefix!r} can be reloaded, not {name!r}")
    return name


def _ms(seconds: float) -> float | None:
    return round(seconds * 1000, 1) if math.isfinite(seconds) else None


def register_bot_handlers(registry: HandlerRegistry, bot: commands.AutoShardedBot, *,
                          cache: SharedCache | None = None, extension_prefix: str = EXTENSION_PREFIX,
                          reload_timeout: float = 30.0) -> None:
    """Register ``ping``, ``guild_count``, ``shard_status``, ``reload_extension`` and ``cache_invalidate``.

    Parameters
    ----------
    registry:
        Where to register them.
    bot:
        The cluster's bot.
    cache:
        The cluster's shared cache, for ``cache_invalidate``; without one that action answers an
        error.
    extension_prefix:
        The package whose extensions ``reload_extension`` may reload.
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
        name = check_extension_name(args.get("name"), extension_prefix)
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
