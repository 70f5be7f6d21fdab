"""The launcher's plan survives a Redis that lost its data (restarted without persistence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.launcher import PLAN_FILE, Launcher
from cluster.plan import plan
from cluster.state import load_plan
from innkeeper.errors import InnkeeperError
from innkeeper.settings import Settings
from tests.support import IPC_KEYS

pytestmark = pytest.mark.integration


async def test_a_plan_redis_lost_comes_back_from_the_run_directory(tmp_path: Path, redis_url: str,
                                                                  redis_prefix: str) -> None:
    settings = Settings.from_env({"DISCORD_TOKEN": "t", "REDIS_URL": redis_url, "INNKEEPER_REDIS_PREFIX": redis_prefix,
                                  "INNKEEPER_RUN_DIR": str(tmp_path / "run"), "INNKEEPER_IPC_KEYS": IPC_KEYS})
    lines: list[str] = []
    launcher = Launcher(settings, out=lines.append)
    launcher.run_dir.mkdir(parents=True, exist_ok=True)
    p = plan(8, 2, clusters=4)
    async with launcher.redis() as client:
        with pytest.raises(InnkeeperError, match="no plan"):
            await launcher.current_plan(client)  # nothing launched here
        await launcher.store_plan(client, p)
        assert (launcher.run_dir / PLAN_FILE).stat().st_mode & 0o077 == 0  # private, like every run file
        assert await launcher.current_plan(client) == p
        await client.delete(launcher.keys.plan())  # Redis restarted without its data
        assert await launcher.current_plan(client) == p
        assert any("restored it from" in line for line in lines)
        assert await load_plan(client, launcher.keys) == p  # and Redis has it again, for every other reader
        (launcher.run_dir / PLAN_FILE).write_text("{not json")
        await client.delete(launcher.keys.plan())
        with pytest.raises(InnkeeperError, match="no plan"):
            await launcher.current_plan(client)
