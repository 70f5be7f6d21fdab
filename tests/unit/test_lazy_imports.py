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


#: Code a cluster process never runs, and what importing it would add to every cluster's fixed base
#: (RSS above a built cluster's imports, ``bench/import_cost.py``'s method): the launcher, status
#: service and CLI (``cluster``, 1.5 MiB with the launcher), supervisord itself (1.7 MiB), the
#: simulator (1.5 MiB), backups, restores, the database CLI, the docs generator and the benchmarks.
_NEVER_IN_A_CLUSTER = ("cluster", "supervisor", "simulator", "bench", "db.backup", "db.restore", "db.cli",
                       "db.testing", "shard.docs")



def test_a_built_cluster_imports_no_cli_launcher_simulator_or_backup_code() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "_built_cluster.py")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    loaded = out.stdout.split()
    assert "shard.assembly" in loaded and "shard.cogs.core" in loaded  # the probe did build a cluster
    stray = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in _NEVER_IN_A_CLUSTER)]
    assert stray == []
