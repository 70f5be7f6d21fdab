"""Rendering the supervisord program files, checked with supervisord's own parsers."""

from __future__ import annotations

import configparser
import dataclasses
import json
import stat
from pathlib import Path

import pytest
from supervisor.datatypes import dict_of_key_value_pairs
from supervisor.options import expand

from cluster.plan import plan
from cluster.render import (
    CLUSTERS_GROUP,
    Policy,
    SimulatorSpec,
    render_clusters,
    render_simulator,
    status_settings_json,
    supervisor_environment,
    write_private,
)
from cluster.supervisor import daemon_environment
from innkeeper.errors import ConfigError
from innkeeper.settings import Settings
from shard.__main__ import parse_shard_ids


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DISCORD_TOKEN": "tok.en-1", "INNKEEPER_RUN_DIR": str(tmp_path / "run"),
                              "DATABASE_URL": "postgresql://u:p%40ss@h/db", "INNKEEPER_REDIS_PREFIX": "x",
                              "INNKEEPER_STATUS_TOKEN": "status-only"})


def _parse(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_clusters_conf(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    p = plan(16, 4, clusters=4)
    conf = _parse(render_clusters(p.clusters, p.shard_count, p.max_concurrency, settings,
                                   policy=Policy(startretries=2)))
    programs = [s for s in conf.sections() if s.startswith("program:")]
    assert programs == [f"program:cluster-{i}" for i in range(4)]
    assert conf.get(f"group:{CLUSTERS_GROUP}", "programs") == "cluster-0,cluster-1,cluster-2,cluster-3"
    for spec in p.clusters:
        section = f"program:cluster-{spec.id}"
        argv = conf.get(section, "command").split()
        assert argv[1:4] == ["-m", "shard", "--cluster"] and argv[4] == str(spec.id)
        assert parse_shard_ids(argv[argv.index("--shard-ids") + 1]) == list(spec.shard_ids)
        assert argv[argv.index("--shard-count") + 1] == "16"
        assert argv[argv.index("--max-concurrency") + 1] == "4"  # the shard never asks /gateway/bot
        assert conf.get(section, "autorestart") == "false"  # late deaths: the crash-loop guard restarts them
        assert conf.get(section, "exitcodes") == "0,78"
        assert conf.get(section, "startretries") == "2"
        assert conf.get(section, "stopsignal") == "TERM"
        assert conf.get(section, "stdout_logfile").endswith(f"run/logs/cluster-{spec.id}.log")
        # supervisord expands %(...)s and then parses KEY="value" pairs: we get the settings back,
        # with the four clusters of this host sharing its IP for the invalid-request guard.
        env = dict_of_key_value_pairs(expand(conf.get(section, "environment"), {}, "environment"))
        # the status token is not theirs
        assert Settings.from_env(env) == dataclasses.replace(settings, status_token=None, guard_processes=4)
        assert env["DATABASE_URL"] == "postgresql://u:p%40ss@h/db" and "INNKEEPER_STATUS_TOKEN" not in env


def test_simulator_conf(tmp_path: Path) -> None:
    sim = SimulatorSpec(port=8765, guilds=2000, shards=8, max_concurrency=4, identify_window=0.5, token="sim-token")
    conf = _parse(render_simulator(sim, _settings(tmp_path)))
    cmd = conf.get("program:simulator", "command")
    assert "-m simulator" in cmd and "--port 8765" in cmd and "--identify-window 0.5" in cmd
    assert "--max-concurrency 4" in cmd and "--token sim-token" in cmd
    with pytest.raises(ConfigError):
        render_simulator(SimulatorSpec(1, 1, 1, 1, 1.0, "bad token"), _settings(tmp_path))


@pytest.mark.parametrize("value", ["a'b", 'a"b', "100%", "x,y=z", "", "spaces in it", "a#b"])
def test_environment_round_trips(value: str) -> None:
    env = {"A_VAR": value, "B": "plain"}
    assert dict_of_key_value_pairs(expand(supervisor_environment(env), {}, "env")) == env


@pytest.mark.parametrize("value", ["line\nbreak", "'quoted'", "both ' and \"", '"x'])
def test_environment_rejects_what_supervisord_cannot_carry(value: str) -> None:
    with pytest.raises(ConfigError, match="A_VAR"):
        supervisor_environment({"A_VAR": value})


def test_supervisord_and_the_status_service_get_no_secret(tmp_path: Path) -> None:
    """supervisord's environment is inherited by every program, the status service included: no setting
    travels through it. The clusters get theirs in their program files, the status service only what it uses."""
    environ = {"PATH": "/usr/bin", "HOME": "/home/ops", "LANG": "C.UTF-8", "DISCORD_TOKEN": "tok.en-1",
               "INNKEEPER_IPC_KEYS": "dev", "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_STATUS_TOKEN": "s",
               "DATABASE_URL": "postgresql://u:p@h/db", "REDIS_URL": "redis://h/0", "INNKEEPER_REDIS_PREFIX": "x"}
    assert daemon_environment(environ) == {"PATH": "/usr/bin", "HOME": "/home/ops", "LANG": "C.UTF-8"}
    settings = Settings.from_env({**environ, "INNKEEPER_RUN_DIR": str(tmp_path / "run")})
    status_env = json.loads(status_settings_json(settings))
    assert set(status_env) == {"REDIS_URL", "INNKEEPER_REDIS_PREFIX", "INNKEEPER_STATUS_TOKEN",
                               "INNKEEPER_STATUS_HOST", "INNKEEPER_STATUS_PORT", "INNKEEPER_HEARTBEAT_INTERVAL",
                               "INNKEEPER_LOG_FORMAT", "INNKEEPER_LOG_LEVEL", "INNKEEPER_RUN_DIR"}
    assert Settings.from_env(status_env).status_token == "s"  # what it needs, it has


def test_write_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "clusters.conf"
    assert write_private(path, "secret") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_private(path, "secret") is False
    assert write_private(path, "other") is True and path.read_text() == "other"


def test_a_later_generation_and_the_auto_reshard_helper(tmp_path: Path) -> None:
    from cluster.render import render_auto_reshard

    settings = _settings(tmp_path)
    p = plan(16, 4, clusters=4, generation=2, first_id=3)
    conf = _parse(render_clusters(p.clusters, p.shard_count, p.max_concurrency, settings, generation=p.generation))
    assert conf.get("group:clusters-g2", "programs") == "cluster-3,cluster-4,cluster-5,cluster-6"
    argv = conf.get("program:cluster-3", "command").split()
    assert argv[argv.index("--generation") + 1] == "2" and argv[argv.index("--cluster") + 1] == "3"
    helper = _parse(render_auto_reshard(settings))
    assert helper.get("program:autoreshard", "command").split()[1:] == ["-m", "cluster.auto_reshard"]
    assert helper.get("program:autoreshard", "autorestart") == "true"
    env = dict_of_key_value_pairs(expand(helper.get("program:autoreshard", "environment"), {}, "environment"))
    # the clusters' settings (it renders their programs), never the status token
    assert env["DISCORD_TOKEN"] == "tok.en-1" and env["INNKEEPER_AUTO_RESHARD"] == "True"
    assert "INNKEEPER_STATUS_TOKEN" not in env
