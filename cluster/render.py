"""Render the supervisord program files the launcher includes: ``run/clusters.conf`` and ``run/simulator.conf``.

The templates live in ``deploy/`` (``string.Template`` syntax). Every cluster gets the same
environment, :meth:`Settings.as_env` without :data:`NOT_FOR_PROGRAMS` (the status token, which only
the status service uses), so all clusters share one configuration. The files hold the bot token,
so they are written with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from innkeeper.errors import ConfigError
from innkeeper.settings import PROJECT_ROOT, Settings

from .crash_policy import GUARD_SETTINGS
from .plan import CLUSTERS_GROUP, ClusterSpec, format_shard_ids, group_name
from .status import SETTINGS_USED

__all__ = ("Policy", "render_clusters", "render_simulator", "supervisor_environment", "write_private",
           "SimulatorSpec", "CLUSTERS_GROUP", "EXPECTED_EXIT_CODES", "TEMPLATE_DIR", "status_settings_json",
           "crash_guard_settings_json", "SIMULATOR_PORT_FILE", "clusters_conf_name", "CLUSTERS_CONF_GLOB",
           "render_auto_reshard", "AUTO_RESHARD_CONF")

TEMPLATE_DIR = PROJECT_ROOT / "deploy"
#: The program files of every generation's clusters in the run directory (see :func:`clusters_conf_name`).
CLUSTERS_CONF_GLOB = "clusters*.conf"
#: A cluster's exit codes that are no crash: 0 (a clean stop) and 78 (fatal: retrying cannot help).
EXPECTED_EXIT_CODES = (0, 78)


@dataclass(frozen=True, slots=True)
class Policy:
    """Restart, stop and log policy of the cluster programs."""

    startsecs: int = 5
    startretries: int = 3
    stopwaitsecs: int = 30
    log_maxbytes: str = "50MB"
    log_backups: int = 5


@dataclass(frozen=True, slots=True)
class SimulatorSpec:
    """The simulator ``innkeeper demo`` runs."""

    port: int
    guilds: int
    shards: int
    max_concurrency: int
    identify_window: float
    token: str


def supervisor_environment(env: Mapping[str, str]) -> str:
    """``KEY="value",…`` as supervisord's ``environment=`` parses it back (``%`` doubled, quoted).

    Raises
    ------
    ConfigError
        For a value supervisord cannot carry (a newline, or both kinds of quote).
    """
    parts: list[str] = []
    for key, value in sorted(env.items()):
        if not key.replace("_", "").isalnum():
            raise ConfigError(f"environment variable name {key!r} cannot be passed through supervisord", variable=key)
        if "\n" in value or "\r" in value:
            raise ConfigError(f"{key} contains a newline, which supervisord cannot pass on", variable=key)
        if ('"' in value and "'" in value) or (value and (value[0] in "'\"" or value[-1] in "'\"")):
            raise ConfigError(f"{key} starts or ends with a quote or holds both kinds: supervisord cannot pass it",
                              variable=key)
        quote = "'" if '"' in value else '"'
        parts.append(f"{key}={quote}{value.replace('%', '%%')}{quote}")
    return ",".join(parts)


def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / name).read_text())


#: Settings the clusters and the simulator never use, kept out of their program files.
NOT_FOR_PROGRAMS = frozenset({"status_token"})


def _common(settings: Settings, policy: Policy, extra_env: Mapping[str, str] | None) -> dict[str, object]:
    used = [f for f in Settings.__dataclass_fields__ if f not in NOT_FOR_PROGRAMS]
    env = {**settings.as_env(only=used), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return {
        "python": sys.executable, "project_root": str(PROJECT_ROOT), "environment": supervisor_environment(env),
        "log_dir": str(settings.run_dir.resolve() / "logs"), "log_maxbytes": policy.log_maxbytes,
        "log_backups": policy.log_backups,
    }


def clusters_conf_name(generation: int) -> str:
    """The program file of one generation's clusters: ``clusters.conf`` (generation 0), ``clusters-g1.conf``…

    A zero-downtime reshard writes the next generation's file beside the running one's, so
    supervisord adds the new group without touching the old one.
    """
    return f"{group_name(generation)}.conf"


def render_clusters(clusters: Iterable[ClusterSpec], shard_count: int, max_concurrency: int, settings: Settings, *,
                    policy: Policy = Policy(), extra_env: Mapping[str, str] | None = None,
                    generation: int = 0) -> str:
    """``run/clusters.conf``: one ``[program:cluster-N]`` per cluster and ``[group:clusters]``.

    A later ``generation`` (a zero-downtime reshard) goes in its own group, ``clusters-gN``, and
    each program is told its generation (``--generation``).

    Each program gets its shard range, the total shard count and Discord's ``max_concurrency`` on
    its command line, so a cluster never asks ``GET /gateway/bot`` itself. ``INNKEEPER_GUARD_PROCESSES``
    is at least the number of these clusters: they share the host's IP, and without Redis each
    process's invalid-request guard takes an equal share of Discord's per-IP budget.
    """
    template = _template("cluster.conf.tmpl")
    specs = list(clusters)
    guard = {"INNKEEPER_GUARD_PROCESSES": str(max(settings.guard_processes, len(specs)))}
    common = _common(settings, policy, {**guard, **(extra_env or {})})
    blocks = [
        template.substitute(common, cluster_id=c.id, shard_range=format_shard_ids(c.shard_ids),
                            shard_total=shard_count, max_concurrency=max_concurrency, generation=generation,
                            startsecs=policy.startsecs,
                            startretries=policy.startretries, stopwaitsecs=policy.stopwaitsecs,
                            exitcodes=",".join(str(c) for c in EXPECTED_EXIT_CODES))
        for c in specs
    ]
    group = f"[group:{group_name(generation)}]\nprograms={','.join(c.name for c in specs)}\n"
    return "\n".join([*blocks, group])


#: The auto-reshard helper's program file in the run directory.
AUTO_RESHARD_CONF = "auto-reshard.conf"


def render_auto_reshard(settings: Settings, *, policy: Policy = Policy()) -> str:
    """``run/auto-reshard.conf``: the auto-reshard helper (``cluster/auto_reshard.py``), with the clusters'
    settings (it renders their programs when it reshards)."""
    return _template("auto_reshard.conf.tmpl").substitute(_common(settings, policy, None),
                                                          stopwaitsecs=policy.stopwaitsecs)


#: Where the demo's simulator writes the port it bound (``run/simulator.port``).
SIMULATOR_PORT_FILE = "simulator.port"


def render_simulator(sim: SimulatorSpec, settings: Settings, *, policy: Policy = Policy()) -> str:
    """``run/simulator.conf`` (demo mode only); the simulator writes its port to :data:`SIMULATOR_PORT_FILE`."""
    for name, value in (("token", sim.token),):
        if not value.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"the simulator {name} may hold only letters, digits, '-', '_' and '.'")
    common = _common(settings, policy, None)
    return _template("simulator.conf.tmpl").substitute(
        common, port=sim.port, guilds=sim.guilds, shards=sim.shards, max_concurrency=sim.max_concurrency,
        identify_window=f"{sim.identify_window:g}", token=sim.token,
        port_file=str(settings.run_dir.resolve() / SIMULATOR_PORT_FILE))


def write_private(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically with mode 0600; False when the content was already the same."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def crash_guard_settings_json(settings: Settings) -> str:
    """The crash-loop guard's settings file (``run/crash-guard-settings.json``):
    only what it uses (:data:`cluster.crash_policy.GUARD_SETTINGS`), with the run directory resolved."""
    resolved = dataclasses.replace(settings, run_dir=settings.run_dir.resolve())
    return json.dumps(resolved.as_env(only=GUARD_SETTINGS), indent=1, sort_keys=True) + "\n"


def status_settings_json(settings: Settings) -> str:
    """The status service's settings file (``run/status-settings.json``): only what it uses
    (:data:`cluster.status.SETTINGS_USED`), never the token, the keys or the database URL."""
    return json.dumps(settings.as_env(only=SETTINGS_USED), indent=1, sort_keys=True) + "\n"
