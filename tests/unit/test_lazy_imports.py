"""What a cluster process does not import until a command needs it (each costs every cluster its RSS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_BUILD = """
import asyncio, sys
from innkeeper.settings import Settings
from shard.assembly import build_cluster
from shard.cogs import EXTENSIONS
from shard.context import ClusterContext

async def main():
    settings = Settings(api_url="http://127.0.0.1:1", encryption_keys=("dev",), ipc_keys=("dev",), discord_token="t")
    ctx = ClusterContext.create(settings, cluster_id=0, shard_ids=[0], shard_count=1, max_concurrency=1)
    bot = build_cluster(ctx)
    for name in EXTENSIONS:  # what setup_hook loads
        await bot.load_extension(name)
    print(" ".join(sorted(m for m in {MODULES} if m in sys.modules)) or "-")
    ring = bot.deps.key_ring
    token = ring.encrypt("hello", context="feedback.body", row="1/2")
    assert ring.decrypt(token, context="feedback.body", row="1/2") == "hello"
    print(" ".join(sorted(m for m in {MODULES} if m in sys.modules)) or "-")
    await ctx.aclose()

asyncio.run(main())
"""


def test_a_built_cluster_loads_the_cipher_only_when_it_first_encrypts() -> None:
    native = "cryptography.hazmat.bindings._rust"  # about 7 MiB of RSS
    out = subprocess.run([sys.executable, "-c", _BUILD.replace("{MODULES}", repr((native,)))], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    before, after = out.stdout.split()
    assert before == "-"
    assert after == native
