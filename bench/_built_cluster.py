"""Build a cluster with every extension loaded, then print every module it imported (space-separated).

``python bench/_built_cluster.py``: what a running cluster holds in ``sys.modules``, without connecting
anywhere. ``bench/import_cost.py`` measures what our layers of it cost; ``tests/unit/test_lazy_imports.py``
checks that no CLI, launcher, simulator or backup code is among them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shard.__main__  # noqa: E402,F401 - the entry point's own imports count too
from innkeeper.settings import Settings  # noqa: E402
from shard.assembly import build_cluster  # noqa: E402
from shard.cogs import EXTENSIONS  # noqa: E402
from shard.context import ClusterContext  # noqa: E402


async def _main() -> None:
    settings = Settings(api_url="http://127.0.0.1:1", encryption_keys=("dev",), ipc_keys=("dev",), discord_token="t")
    ctx = ClusterContext.create(settings, cluster_id=0, shard_ids=[0], shard_count=1, max_concurrency=1)
    bot = build_cluster(ctx)
    for name in EXTENSIONS:
        await bot.load_extension(name)
    await ctx.aclose()


if __name__ == "__main__":
    asyncio.run(_main())
    print(" ".join(sorted(sys.modules)))
