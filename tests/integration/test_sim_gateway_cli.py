"""``python -m simulator`` / ``innkeeper simulator``: flags, validation, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from cluster import innkeeper_cli
from innkeeper.errors import UsageError
from innkeeper.settings import Settings
from simulator import cli
from simulator.config import SimConfig
from simulator.server import run_simulator
from tests.support import free_port, wait_for


def test_flags_build_a_config() -> None:
    args = cli.build_parser().parse_args([
        "--guilds", "40", "--members-per-guild", "7", "--channels-per-guild", "4", "--shards", "4",
        "--max-concurrency", "2", "--identify-window", "0.25", "--global-rate", "30", "--seed", "9",
        "--token", "abc", "--heartbeat-interval-ms", "5000", "--resume-ttl", "12.5", "--port", "9999"])
    config = cli.config_from_args(args)
    assert config == SimConfig(guilds=40, members_per_guild=7, channels_per_guild=4, shards=4, max_concurrency=2,
                               identify_window=0.25, global_rate=30, seed=9, token="abc",
                               heartbeat_interval_ms=5000, resume_ttl=12.5, port=9999)
    assert cli.config_from_args(cli.build_parser().parse_args([])) == SimConfig()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--guilds", "0"], "--guilds must be between 1 and"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--max-concurrency", "0"], "--max-concurrency"),
    (["--shards", "-1"], "--shards"),
    (["--identify-window", "-1"], "--identify-window must be at least 0"),
    (["--token", " "], "--token must not be empty"),
])
def test_bad_flags_exit_2_with_one_clear_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


async def test_innkeeper_simulator_shares_the_flags() -> None:
    parser = innkeeper_cli.build_parser()
    args = parser.parse_args(["simulator", "--guilds", "12", "--shards", "3"])
    assert callable(args.handler) and cli.config_from_args(args) == SimConfig(guilds=12, shards=3)
    bad = parser.parse_args(["simulator", "--members-per-guild", "0"])
    with pytest.raises(UsageError, match="--members-per-guild must be"):  # cluster.innkeeper_cli turns it into exit 2
        await bad.handler(bad, Settings.from_env({}))


async def test_run_simulator_serves_and_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    config = SimConfig(port=port, guilds=5)
    task = asyncio.create_task(run_simulator(config))

    async def listening() -> bool:
        if task.done():
            task.result()
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    f"ws://127.0.0.1:{port}/gateway?v=10&encoding=json") as ws:
                return (await ws.receive_json(timeout=5))["op"] == 10
        except aiohttp.ClientConnectionError:
            return False

    await wait_for(listening, timeout=20, message="the simulator to listen")
    assert f"simulator listening on http://127.0.0.1:{port} (guilds=5, shards=1" in capsys.readouterr().out
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout=15)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/_sim/stats")
