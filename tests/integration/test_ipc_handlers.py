"""The standard bus actions on a real discord.py bot, and ``innkeeper reload`` end to end."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord
import msgpack
import pytest
import redis.asyncio as aioredis
from discord.ext import commands

from innkeeper.errors import ErrorCode, IPCError, UsageError
from innkeeper.extensions import check_extension_name, normalise_extension
from innkeeper.settings import PROJECT_ROOT
from ipc.bus import Bus
from ipc.cache import SharedCache
from ipc.keys import Keys
from ipc.registry import HandlerRegistry
from shard.bus_handlers import register_cluster_handlers
from tests.support import DEV_CLI_ENV, INNKEEPER_CLI, ipc_signer

pytestmark = pytest.mark.integration

EXT_TEMPLATE = """
from discord.ext import commands

VERSION = {version}

class Hello(commands.Cog):
    pass

async def setup(bot):
    {body}
    bot.hello_version = VERSION
    await bot.add_cog(Hello())
"""


@pytest.fixture
def ext_package(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A throwaway package ``ikt_<id>.cogs`` on sys.path, holding the extension ``hello``."""
    pkg = f"ikt_{uuid.uuid4().hex[:8]}"
    cogs = tmp_path / pkg / "cogs"
    cogs.mkdir(parents=True)
    (tmp_path / pkg / "__init__.py").write_text("")
    (cogs / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        yield f"{pkg}.cogs.", cogs / "hello.py"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            del sys.modules[name]


def write_ext(path: Path, version: int, *, broken: bool = False) -> None:
    body = "raise RuntimeError('broken on purpose')" if broken else "pass"
    path.write_text(textwrap.dedent(EXT_TEMPLATE.format(version=version, body=body)))
    # make sure a reload sees the new source even within one mtime tick
    for cached in path.parent.glob("__pycache__/hello*.pyc"):
        cached.unlink()


async def test_standard_actions_on_a_real_bot(redis: aioredis.Redis, redis_prefix: str,
                                              ext_package: tuple[str, Path]) -> None:
    prefix, ext_file = ext_package
    write_ext(ext_file, 1)
    bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default())
    await bot.load_extension(prefix + "hello")
    keys = Keys(redis_prefix)
    cache = SharedCache(redis, keys, signer=ipc_signer())
    registry = HandlerRegistry()
    register_cluster_handlers(registry, bot, cache=cache, extension_package=prefix)
    assert set(registry) == {"ping", "guild_count", "shard_status", "reload_extension", "cache_invalidate"}
    async with (cache, Bus(redis, keys, 0, signer=ipc_signer(), registry=registry),
                Bus(redis, keys, "cli-test", signer=ipc_signer()) as cli):
        assert await cli.request(0, "ping") == {"pong": True, "ready": False, "latency_ms": None}
        assert await cli.request(0, "guild_count") == 0
        assert await cli.request(0, "shard_status") == []

        write_ext(ext_file, 2)
        assert await cli.request(0, "reload_extension", {"name": prefix + "hello"}) == {"reloaded": prefix + "hello"}
        assert bot.hello_version == 2  # type: ignore[attr-defined]

        write_ext(ext_file, 3, broken=True)
        with pytest.raises(IPCError) as info:
            await cli.request(0, "reload_extension", {"name": prefix + "hello"})
        assert info.value.code is ErrorCode.COMMAND_FAILED and "broken on purpose" in info.value.message
        assert bot.hello_version == 2 and bot.get_cog("Hello") is not None  # type: ignore[attr-defined]

        for bad, code in [({"name": "os"}, ErrorCode.USAGE), ({"name": prefix + "absent"}, ErrorCode.NOT_FOUND),
                          ({"name": 5}, ErrorCode.USAGE), ({}, ErrorCode.USAGE)]:
            with pytest.raises(IPCError) as info:
                await cli.request(0, "reload_extension", bad)
            assert info.value.code is code, bad

        await cache.set("settings", 1, "x")
        assert await cli.request(0, "cache_invalidate", {"namespace": "settings", "keys": [1]}) == {"dropped": 1}
        assert await cli.request(0, "cache_invalidate", {"namespace": "settings", "keys": None}) == {"dropped": 0}
        with pytest.raises(IPCError) as info:
            await cli.request(0, "cache_invalidate", {"namespace": 3})
        assert info.value.code is ErrorCode.USAGE
    await bot.unload_extension(prefix + "hello")  # the bot never logged in: nothing else to close


def test_extension_names() -> None:
    assert normalise_extension("settings") == "shard.cogs.settings"
    assert normalise_extension(" shard.cogs.core ") == "shard.cogs.core"
    assert check_extension_name("shard.cogs.sub.module") == "shard.cogs.sub.module"
    for bad in ("os.system", "shard.cogs", "shard.cogs.", "shard.cogs.x;y", "../etc", "shard.pipeline.core", "",
                "shard.cogs.1abc"):
        with pytest.raises(UsageError):
            check_extension_name(bad)
    with pytest.raises(UsageError):
        normalise_extension("x;rm -rf")


async def _innkeeper(redis_url: str, prefix: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "INNKEEPER_REDIS_PREFIX": prefix, "INNKEEPER_LOG_FORMAT": "text",
           **DEV_CLI_ENV}
    proc = await asyncio.create_subprocess_exec(*INNKEEPER_CLI, *args, cwd=PROJECT_ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _cluster_registry(outcome: str) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("reload_extension")
    async def reload_extension(args: dict[str, Any]) -> dict[str, Any]:
        if outcome == "fail":
            raise IPCError(f"extension {args['name']!r} is not loaded on this cluster", code=ErrorCode.NOT_FOUND)
        return {"reloaded": args["name"]}

    return registry


async def test_innkeeper_reload_reports_every_cluster(redis: aioredis.Redis, redis_url: str,
                                                      redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    code, _, err = await _innkeeper(redis_url, redis_prefix, "reload", "settings", "--timeout", "2")
    assert code == 1 and "no live clusters" in err

    buses = [Bus(redis, keys, cid, signer=ipc_signer(), registry=_cluster_registry(outcome))
             for cid, outcome in [(0, "ok"), (1, "ok"), (2, "fail")]]
    for cid in (0, 1, 2, 3):  # cluster 3 has a heartbeat but its bus is gone
        await redis.set(keys.heartbeat(cid), msgpack.packb({"cluster_id": cid}), ex=60)
    for bus in buses:
        await bus.start()
    try:
        code, out, _ = await _innkeeper(redis_url, redis_prefix, "reload", "settings", "--timeout", "2")
        assert code == 1
        assert out.splitlines() == [
            "cluster 0: ok",
            "cluster 1: ok",
            "cluster 2: error [E5007] extension 'shard.cogs.settings' is not loaded on this cluster",
            "cluster 3: no answer within 2s",
            "reload shard.cogs.settings: 2 of 4 clusters ok",
        ]
        await redis.delete(keys.heartbeat(2), keys.heartbeat(3))
        code, out, _ = await _innkeeper(redis_url, redis_prefix, "reload", "shard.cogs.settings")
        assert code == 0 and out.splitlines()[-1] == "reload shard.cogs.settings: 2 of 2 clusters ok"
        code, _, err = await _innkeeper(redis_url, redis_prefix, "reload", "os.path")
        assert code == 2 and "shard.cogs." in err
    finally:
        for bus in buses:
            await bus.stop()
