"""``innkeeper reload EXTENSION``: reload a cog on every live cluster and report each one.

The command finds the live clusters from their heartbeats, broadcasts ``reload_extension`` over the
bus as ``cli-<uuid>`` and prints one line per cluster (ok, error, or no answer). It exits 0 when
every cluster reloaded, 1 otherwise, 2 on a bad name. The name is checked here first, so a typo
gets a usage error at once; each receiving cluster checks it again (``shard/bus_handlers.py``)
before it touches anything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from innkeeper.errors import UsageError
from innkeeper.extensions import normalise_extension
from ipc.bus import Bus, live_clusters
from ipc.keys import Keys
from ipc.signing import FrameSigner

if TYPE_CHECKING:
    from innkeeper.settings import Settings

__all__ = ("add_commands", "reload_extension_everywhere")

_log = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reload`` to the ``innkeeper`` CLI."""
    parser = subparsers.add_parser(
        "reload", help="reload an extension (cog) on every live cluster",
        description="Reload an extension on every live cluster and print each cluster's result. "
                    "Exits 1 if any cluster failed or did not answer.")
    parser.add_argument("extension", help="e.g. shard.cogs.settings, or just settings")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for answers (default 30)")
    parser.set_defaults(handler=_run)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 < args.timeout <= 600:
        raise UsageError("--timeout must be between 0 and 600 seconds")
    name = normalise_extension(args.extension)
    signer = FrameSigner.from_settings(settings)
    return await reload_extension_everywhere(settings.redis_url, Keys(settings.redis_prefix), name, signer=signer,
                                             timeout=args.timeout)


async def reload_extension_everywhere(redis_url: str, keys: Keys, name: str, *, signer: FrameSigner,
                                      timeout: float = 30.0) -> int:
    """Broadcast ``reload_extension`` to every live cluster, print the results, return the exit code.

    The request is signed with ``signer`` (``INNKEEPER_IPC_KEYS``): clusters drop unsigned frames.
    """
    redis = aioredis.from_url(redis_url)
    try:
        live = await live_clusters(redis, keys)
        if not live:
            print(f"reload {name}: no live clusters (no heartbeats under the prefix {keys.prefix!r})",
                  file=sys.stderr)
            return 1
        async with Bus(redis, keys, f"cli-{uuid.uuid4().hex[:12]}", signer=signer) as bus:
            result = await bus.broadcast_gather("reload_extension", {"name": name}, expected=live, timeout=timeout)
    finally:
        await redis.aclose()
    for cid in sorted(live, key=int):
        if cid in result.results:
            print(f"cluster {cid}: ok")
        elif cid in result.errors:
            error = result.errors[cid]
            print(f"cluster {cid}: error [{error.code}] {error.message}")
        else:
            print(f"cluster {cid}: no answer within {timeout:g}s")
    print(f"reload {name}: {len(result.results)} of {len(live)} clusters ok")
    return 0 if result.ok else 1
