"""``python -m simulator`` / ``innkeeper simulator``: flags, validation, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from cluster import innkeeper_cli
from innkeeper.errors import UsageError
from innkeeper.settings import Settings
from simulator import cli
from simulator.config import SimConfig
from tests.procs import spawn
from tests.support import read_port, wait_for_sync


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


def test_the_privileged_intents_flag_builds_a_config() -> None:
    args = cli.build_parser().parse_args(["--privileged-intents", "members,message_content"])
    assert cli.config_from_args(args) == SimConfig(privileged_intents="members,message_content")
    assert cli.config_from_args(cli.build_parser().parse_args(["--privileged-intents", "none"])).privileged_intents \
        == "none"


def test_the_interaction_deadline_flags_build_a_config() -> None:
    args = cli.build_parser().parse_args(["--interaction-deadline", "5", "--interaction-token-ttl", "60"])
    assert cli.config_from_args(args) == SimConfig(interaction_deadline=5.0, interaction_token_ttl=60.0)


def test_the_invalid_request_flags_build_a_config() -> None:
    args = cli.build_parser().parse_args(["--invalid-request-limit", "0", "--invalid-request-window", "30",
                                          "--invalid-request-ban", "10"])
    assert cli.config_from_args(args) == SimConfig(invalid_request_limit=0, invalid_request_window=30.0,
                                                   invalid_request_ban=10.0)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--guilds", "0"], "--guilds must be between 1 and"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--max-concurrency", "0"], "--max-concurrency"),
    (["--shards", "-1"], "--shards"),
    (["--identify-window", "-1"], "--identify-window must be at least 0"),
    (["--token", " "], "--token must not be empty"),
    (["--huge-guilds", "5", "--guilds", "2"], "--huge-guilds must be at most --guilds (2)"),
    (["--max-member-count", "10", "--members-per-guild", "20"], "--max-member-count must be above"),
    (["--size-tail", "0.1"], "--size-tail must be between 0.3 and 5"),
    (["--privileged-intents", "presence"], "--privileged-intents: unknown privileged intent 'presence'"),
    (["--interaction-deadline", "0"], "--interaction-deadline must be at least 0.001"),
    (["--interaction-deadline", "10", "--interaction-token-ttl", "5"], "--interaction-token-ttl must be at least"),
    (["--invalid-request-limit", "-1"], "--invalid-request-limit must be at least 0"),
    (["--invalid-request-window", "0"], "--invalid-request-window must be at least"),
    (["--invalid-request-ban", "-5"], "--invalid-request-ban must be at least 0"),
    (["--guilds", "many"], "argument --guilds: invalid int value: 'many'"),
    (["--interaction-token-ttl", "soon"], "invalid float value: 'soon'"),
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


async def test_run_simulator_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``python -m simulator --port 0``: it binds a port, says which, serves, and stops cleanly on SIGTERM.

    The simulator runs in a process of its own, so the signal goes to it and never to the test runner.
    """
    port_file = tmp_path / "sim.port"
    proc = spawn("simulator", ["-m", "simulator", "--port", "0", "--port-file", str(port_file), "--guilds", "5"],
                 tmp_path)
    try:
        def bound() -> int | None:
            assert proc.alive(), proc.output()
            return read_port(port_file)

        port = await asyncio.to_thread(wait_for_sync, bound, timeout=30, message="the simulator's port file")
        async with aiohttp.ClientSession() as http, http.ws_connect(
                f"ws://127.0.0.1:{port}/gateway?v=10&encoding=json") as ws:
            assert (await ws.receive_json(timeout=5))["op"] == 10
        assert f"simulator listening on http://127.0.0.1:{port} (guilds=5, shards=1" in proc.output()
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.popen.wait, 15) == 0, proc.output()
        assert not port_file.exists()  # a clean stop takes its port file with it
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as http:
                await http.get(f"http://127.0.0.1:{port}/_sim/stats")
    finally:
        proc.stop(signal.SIGKILL)
