"""Unmodified discord.py chunks a 250,000-member guild completely from the simulator, over zstd and zlib."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from innkeeper.settings import PROJECT_ROOT
from tests.procs import SIM_TOKEN, spawn, start_simulator
from tests.support import wait_for_sync

pytestmark = pytest.mark.e2e

HUGE = 250_000


@pytest.mark.timeout(300)
@pytest.mark.parametrize("codec", ["zstd-stream", "zlib-stream"])
def test_plain_discord_py_chunks_a_250k_member_guild_completely(tmp_path: Path, codec: str) -> None:
    with start_simulator(tmp_path, guilds=6, shards=1, guild_sizes="realistic",
                         extra_args=("--huge-guilds", "1", "--max-member-count", str(HUGE))) as sim:
        world = {int(g["id"]): g["member_count"] for g in sim.world()["guilds"]}
        assert max(world.values()) == HUGE
        script = str(PROJECT_ROOT / "tests" / "e2e" / "naive_bot.py")
        flags = ["--members"] + (["--no-zstd"] if codec == "zlib-stream" else [])
        bot = spawn(f"naive-{codec}", [script, *flags, sim.url, SIM_TOKEN, "0", "1"], tmp_path)
        try:
            def chunked() -> bool:
                assert bot.alive(), bot.output()
                return "ALL-CHUNKED" in bot.output()

            wait_for_sync(chunked, timeout=240, interval=0.5, message="every guild chunked")
            out = bot.output()
            assert f"compress={codec}" in out
            seen = {int(gid): (int(members), int(count))
                    for gid, members, count in re.findall(r"GUILD id=(\d+) members=(\d+) member_count=(\d+)", out)}
            # Every guild's cache holds exactly its member_count members, the huge one included.
            assert seen == {gid: (count, count) for gid, count in world.items()}
            stats = sim.stats()
            assert stats["connections_by_compress"][codec] >= 1
            assert stats["members_sent"] == sum(world.values())
            assert stats["member_requests_rate_limited"] == 0 and stats["member_requests_ignored"] == 0
        finally:
            bot.stop()
