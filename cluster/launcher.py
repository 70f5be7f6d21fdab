"""The launcher: ``GET /gateway/bot`` → plan → ``run/clusters.conf`` → supervisord → wait for READY.

:class:`Launcher` also carries the operations that act on a running cluster: stop, restart
(all at once, one cluster, or rolling); :mod:`cluster.reshard` drives it for a reshard. Progress
goes to ``out`` one line per change, e.g. ``12/16 shards READY (cluster-2 identifying shard 9)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.redact import redact_url
from innkeeper.settings import Settings
from ipc.generations import GenerationState, clear_acks, write_generations
from ipc.heartbeat import read_heartbeats
from ipc.identify import mark_cold_start, store_budget
from ipc.keys import Keys

from .bytecode import compile_packages
from .console import CLI_LOG, Console
from .crash_policy import STOPPED
from .plan import Plan, is_clusters_group, plan
from .render import (
    AUTO_RESHARD_CONF,
    CLUSTERS_CONF_GLOB,
    EXPECTED_EXIT_CODES,
    Policy,
    clusters_conf_name,
    crash_guard_settings_json,
    render_auto_reshard,
    render_clusters,
    status_settings_json,
    write_private,
)
from .state import Health, build_status, health, load_plan, progress_line, read_guard_records, stale_after, store_plan
from .status import read_status_port
from .supervisor import CRASH_GUARD, Faults, Supervisor, SupervisorError, SupervisorUnavailable

__all__ = ("Launcher", "GatewayInfo", "fetch_gateway", "LaunchFailed", "LaunchInterrupted", "DEFAULT_API_URL")

_log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://discord.com"
#: The launcher's copy of the plan in effect, in the run directory: Redis may lose its own (no persistence).
PLAN_FILE = "plan.json"
_POLL_S = 0.25


class LaunchFailed(InnkeeperError):
    """The clusters did not all become READY."""

    default_code = ErrorCode.CLUSTER_UNHEALTHY


class LaunchInterrupted(InnkeeperError):
    """The launcher stopped waiting (a signal); what supervisord was given keeps running.

    ``applied`` tells whether the plan reached supervisord before the interruption.
    """

    default_code = ErrorCode.CLUSTER_UNHEALTHY

    def __init__(self, message: str, *, applied: bool) -> None:
        super().__init__(message, applied=applied)
        self.applied = applied


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """The answer of ``GET /gateway/bot``."""

    shards: int
    url: str
    session_start_limit: dict[str, int]

    @property
    def max_concurrency(self) -> int:
        return int(self.session_start_limit.get("max_concurrency", 1))


async def fetch_gateway(settings: Settings, *, timeout: float = 15.0) -> GatewayInfo:
    """``GET /gateway/bot`` with the bot token.

    Raises
    ------
    InnkeeperError
        ``DISCORD_AUTH`` when the token is rejected, ``DISCORD_HTTP`` for anything else.
    """
    token = settings.require_token()
    url = f"{settings.api_url or DEFAULT_API_URL}/api/v10/gateway/bot"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url, headers={"Authorization": f"Bot {token}"}) as resp:
            if resp.status == 401:
                raise InnkeeperError("GET /gateway/bot: the token was rejected (401); check DISCORD_TOKEN",
                                     code=ErrorCode.DISCORD_AUTH)
            if resp.status != 200:
                raise InnkeeperError(f"GET /gateway/bot answered {resp.status}: {(await resp.text())[:200]}",
                                     code=ErrorCode.DISCORD_HTTP)
            data: Any = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InnkeeperError(f"cannot reach {url}: {exc or type(exc).__name__}", code=ErrorCode.DISCORD_HTTP) from None
    try:
        limit = {k: int(v) for k, v in data["session_start_limit"].items()}
        return GatewayInfo(int(data["shards"]), str(data["url"]), limit)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InnkeeperError(f"GET /gateway/bot answered something unexpected: {str(data)[:200]}",
                             code=ErrorCode.DISCORD_HTTP) from None


class Launcher:
    """Applies plans to the local supervisord and watches the result.

    Parameters
    ----------
    settings:
        The settings every cluster will run with.
    out:
        Where progress lines go; by default a :class:`~cluster.console.Console`: stdout, and
        ``run/logs/innkeeper.log``, never raising when the terminal is gone.
    policy:
        Restart, stop and log policy of the cluster programs.
    manage_services:
        Whether this launcher owns the status service's and the crash guard's settings files (the
        CLI does). The auto-reshard helper runs with the clusters' settings, which lack the status
        token, so it leaves those files (and supervisord's other programs) alone.
    """

    def __init__(self, settings: Settings, *, out: Callable[[str], None] | None = None,
                 policy: Policy | None = None, manage_services: bool = True) -> None:
        self.settings = settings
        self.manage_services = manage_services
        self.policy = policy or Policy()
        self.keys = Keys(settings.redis_prefix)
        self.run_dir = settings.run_dir.resolve()
        self.out: Callable[[str], None] = out if out is not None else Console(log_path=self.run_dir / CLI_LOG)
        self.supervisor = Supervisor(self.run_dir)
        #: supervisord being started in a worker thread: :meth:`stop` waits for it, since cancelling
        #: the coroutine that started it cannot stop the thread (a stop would miss the new daemon).
        self._daemon_start: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def redis(self) -> AsyncIterator[aioredis.Redis]:
        client = aioredis.from_url(self.settings.redis_url)
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            raise InnkeeperError(f"Redis at {redact_url(self.settings.redis_url)} does not answer: {exc}",
                                 code=ErrorCode.REDIS_UNAVAILABLE) from None
        try:
            yield client
        finally:
            await client.aclose()

    @property
    def stale_after_s(self) -> float:
        return stale_after(self.settings.heartbeat_interval_s)

    @property
    def status_url(self) -> str:
        s = self.settings
        host = "127.0.0.1" if s.status_host in ("0.0.0.0", "") else s.status_host  # noqa: S104
        port = s.status_port or read_status_port(self.run_dir) or 0  # port 0: the one the service bound
        return f"http://{host}:{port}/"

    # --- supervisord ----------------------------------------------------------------------------
    async def ensure_supervisord(self) -> None:
        """Write the status service's settings; start supervisord when its socket does not answer."""
        if not self.manage_services and await self.supervisor.is_running():
            return
        changed = write_private(self.run_dir / "status-settings.json", status_settings_json(self.settings))
        guard_changed = write_private(self.run_dir / "crash-guard-settings.json",
                                      crash_guard_settings_json(self.settings))
        if await self.supervisor.is_running():
            if changed:
                await self.supervisor.stop_process("status")
                await self.supervisor.start_process("status", wait=False)
            if guard_changed:
                await self._restart_crash_guard()
            return
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        # supervisord and the status service get no settings through the environment: the clusters
        # get theirs in their program files, the status service in status-settings.json.
        self._daemon_start = asyncio.get_running_loop().run_in_executor(None, lambda: self.supervisor.start_daemon({}))
        await self._daemon_start
        self.out(f"supervisord started (socket {self.supervisor.socket_path})")

    async def _restart_crash_guard(self) -> None:
        try:
            await self.supervisor.stop_process(CRASH_GUARD)
            await self.supervisor.start_process(CRASH_GUARD, wait=False)
        except SupervisorError as exc:
            if exc.fault != Faults.BAD_NAME:
                raise
            self.out("warning: this supervisord predates the crash-loop guard, so a cluster that dies after "
                     "start-up is not restarted: run `innkeeper stop` and `innkeeper launch` once")

    # --- the plan -------------------------------------------------------------------------------
    def make_plan(self, gateway: GatewayInfo, *, shards: int | None = None, clusters: int | None = None,
                  shards_per_cluster: int | None = None, generation: int = 0, first_id: int = 0) -> Plan:
        s = self.settings
        count = shards or s.shard_count or gateway.shards
        if clusters is None and shards_per_cluster is None:
            clusters, shards_per_cluster = s.clusters, s.shards_per_cluster
        if clusters is not None and shards_per_cluster is not None:
            shards_per_cluster = None  # a cluster count wins over a size from the environment
        return plan(count, gateway.max_concurrency, clusters=clusters, shards_per_cluster=shards_per_cluster,
                    hosts=s.hosts, host_index=s.host_index, generation=generation, first_id=first_id)

    async def apply_plan(self, p: Plan, client: aioredis.Redis, *, beside: Plan | None = None,
                         mark_cold_start: bool = True) -> bool:
        """Render this host's clusters, make supervisord run them, store the plan; True when anything changed.

        With ``beside`` (a zero-downtime reshard bringing ``p`` up next to the running generation),
        the running generation's program file stays as it is and the plan in Redis stays ``beside``;
        otherwise every other generation's program file goes, and supervisord stops its programs.

        Raises
        ------
        ConfigError
            When ``INNKEEPER_IPC_KEYS`` is not set: every cluster would stop at start-up without it.
        """
        self.settings.require_ipc_keys()
        mine = p.for_host(self.settings.host_index)
        text = render_clusters(mine, p.shard_count, p.max_concurrency, self.settings, policy=self.policy,
                               generation=p.generation)
        name = clusters_conf_name(p.generation)
        changed_file = write_private(self.run_dir / name, text)
        if self.manage_services:
            changed_file |= write_private(self.run_dir / AUTO_RESHARD_CONF,
                                          render_auto_reshard(self.settings, policy=self.policy))
        keep = {name} | ({clusters_conf_name(beside.generation)} if beside is not None else set())
        for old in self.run_dir.glob(CLUSTERS_CONF_GLOB):
            if old.name not in keep:
                old.unlink()
                changed_file = True
        if beside is None:
            await self.store_plan(client, p)
        # every cluster loads our modules from bytecode instead of compiling them (cluster/bytecode.py);
        # before the cold-start mark, which the clusters' start times count from
        await asyncio.get_running_loop().run_in_executor(None, compile_packages)
        if mark_cold_start and (changed_file or not await self.supervisor.is_running()):  # they start together
            await self._mark_cold_start(p, client)
        await self.ensure_supervisord()
        added, changed, removed = await self.supervisor.apply()
        for group in added:
            self.out(f"supervisord: added {group}")
        for group in changed:
            self.out(f"supervisord: replaced {group} (its programs changed: every cluster restarts)")
        for group in removed:
            self.out(f"supervisord: removed {group}")
        return changed_file or bool(added or changed or removed)

    async def _store_budget(self, gateway: GatewayInfo, p: Plan, client: aioredis.Redis) -> None:
        """Store Discord's ``session_start_limit`` for the clusters' identify queue; warn when it is short."""
        try:
            budget = await store_budget(client, self.keys, gateway.session_start_limit)
        except ValueError as exc:
            self.out(f"warning: {exc}")
            return
        need = len([s for c in p.for_host(self.settings.host_index) for s in c.shard_ids])
        if budget.remaining - need < self.settings.identify_reserve:
            self.out(f"warning: the identify budget has {budget.remaining} of {budget.total} left; "
                     f"this launch needs {need} and keeps {self.settings.identify_reserve} in reserve")

    async def _mark_cold_start(self, p: Plan, client: aioredis.Redis) -> None:
        """Tell the clusters about to start together when they start (``shard/cold_start.py``)."""
        ttl = p.identify_floor_windows * self.settings.identify_window_s + 600.0
        try:
            await mark_cold_start(client, self.keys, ttl_s=ttl)
        except Exception as exc:  # noqa: BLE001 - without the mark every cluster starts at once, as before
            _log.warning("could not mark the cold start: %s", exc)

    # --- waiting --------------------------------------------------------------------------------
    async def _program_pids(self) -> dict[int, dict[str, Any]]:
        """supervisord's process info of every cluster program, of any generation, by cluster id."""
        out: dict[int, dict[str, Any]] = {}
        for info in (await self.supervisor.processes()).values():
            if is_clusters_group(info["group"]) and info["name"].startswith("cluster-"):
                try:
                    out[int(info["name"].split("-", 1)[1])] = info
                except ValueError:
                    continue
        return out

    async def cluster_groups(self) -> list[str]:
        """The supervisord groups of cluster programs (every generation's)."""
        return sorted({info["group"] for info in (await self.supervisor.processes()).values()
                       if is_clusters_group(info["group"])})

    async def wait_ready(self, p: Plan, client: aioredis.Redis, *, timeout: float | None = None,
                         clusters: set[int] | None = None, not_pids: dict[int, int] | None = None,
                         interrupt: asyncio.Event | None = None) -> Health:
        """Wait until every shard of ``clusters`` (default: this host's) is READY in a heartbeat of its current process.

        ``not_pids`` names old processes whose heartbeats must not count (after a restart).

        Raises
        ------
        LaunchFailed
            When a cluster is FATAL or EXITED in supervisord, or on timeout (with the last progress).
        LaunchInterrupted
            When ``interrupt`` is set: the wait ends, the clusters keep starting.
        """
        wanted = clusters if clusters is not None else {c.id for c in p.for_host(self.settings.host_index)}
        if timeout is None:
            timeout = self.default_timeout(p)
        deadline = time.monotonic() + timeout
        last_line = ""
        sub = Plan(p.shard_count, p.max_concurrency, tuple(c for c in p.clusters if c.id in wanted), p.generation)
        while True:
            beats = await read_heartbeats(client, self.keys, [c.id for c in sub.clusters])
            doc = build_status(sub, beats, stale_after_s=self.stale_after_s,
                               guards=await read_guard_records(client, self.keys))
            procs = await self._program_pids()
            for c in doc["clusters"]:
                info = procs.get(c["id"])
                stale = info is None or c["pid"] != info.get("pid") or (not_pids or {}).get(c["id"]) == c["pid"]
                if c["id"] in wanted and c["pid"] is not None and stale:
                    c["state"] = "DOWN"  # a heartbeat of a process that is gone or replaced
                    for s in c["shards"]:
                        s["state"] = "DOWN"
            h = health(doc, sub)
            h = Health(h.ok, h.ready, sum(len(c.shard_ids) for c in sub.clusters), h.problems)
            line = progress_line(doc, h)
            if line != last_line:
                self.out(line)
                last_line = line
            if h.ready == h.expected:
                return h
            guards = {c["id"]: c["crash_guard"] for c in doc["clusters"]}
            for cid in sorted(wanted):
                info = procs.get(cid)
                guard = guards.get(cid)
                if info is not None and info["statename"] == "EXITED" \
                        and info.get("exitstatus") not in EXPECTED_EXIT_CODES:
                    if guard is not None and guard["state"] == STOPPED:
                        raise LaunchFailed(f"cluster-{cid} stays down: {guard['reason']}")
                    continue  # a late death: the crash-loop guard restarts it after its delay
                if info is not None and info["statename"] in ("FATAL", "EXITED"):
                    tail = (await self.supervisor.tail(f"{info['group']}:cluster-{cid}", 3000)).strip()
                    last = "\n".join(tail.splitlines()[-8:])
                    why = info.get("spawnerr") or "see its log"
                    raise LaunchFailed(f"cluster-{cid} is {info['statename']} ({why}); last log lines:\n{last}")
            if time.monotonic() > deadline:
                raise LaunchFailed(f"not every shard was READY after {timeout:.0f} s: {line}")
            if interrupt is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(interrupt.wait(), timeout=_POLL_S)
                if interrupt.is_set():
                    raise LaunchInterrupted(f"stopped waiting at {line}", applied=True)
            else:
                await asyncio.sleep(_POLL_S)

    def default_timeout(self, p: Plan) -> float:
        """Three times the identify floor plus a minute: a generous bound for a cold start."""
        return 3 * math.ceil(p.shard_count / p.max_concurrency) * self.settings.identify_window_s + 60.0

    # --- commands -------------------------------------------------------------------------------
    async def launch(self, *, shards: int | None = None, clusters: int | None = None,
                     shards_per_cluster: int | None = None, wait: bool = True,
                     timeout: float | None = None, interrupt: asyncio.Event | None = None) -> Plan:
        """Fetch the gateway info, plan, apply, and (by default) wait until every shard is READY.

        Setting ``interrupt`` never leaves a plan half applied: before the plan goes to supervisord
        the launch ends with nothing changed, after it the wait ends and the clusters keep starting
        (:class:`LaunchInterrupted` says which).
        """
        gateway = await fetch_gateway(self.settings)
        async with self.redis() as client:
            # the running generation, and its cluster numbering: an unchanged plan changes nothing
            current = await load_plan(client, self.keys)
            generation = current.generation if current is not None else 0
            first_id = min((c.id for c in current.clusters), default=0) if current is not None else 0
            p = self.make_plan(gateway, shards=shards, clusters=clusters, shards_per_cluster=shards_per_cluster,
                               generation=generation, first_id=first_id)
            mine = p.for_host(self.settings.host_index)
            self.out(f"plan: {p.shard_count} shards (Discord recommends {gateway.shards}), max_concurrency "
                     f"{p.max_concurrency}, {len(p.clusters)} clusters; this host runs "
                     + ", ".join(f"{c.name} [{c.shard_ids[0]}-{c.shard_ids[-1]}]" for c in mine))
            await self._store_budget(gateway, p, client)
            if interrupt is not None and interrupt.is_set():
                raise LaunchInterrupted("interrupted before the plan reached supervisord", applied=False)
            started = time.monotonic()
            await self.settle_generations(p, client)
            await self.apply_plan(p, client)
            if wait:
                h = await self.wait_ready(p, client, timeout=timeout, interrupt=interrupt)
                elapsed = time.monotonic() - started
                floor = p.identify_floor_windows * self.settings.identify_window_s
                token = " (token required)" if self.settings.status_token else ""
                self.out(f"all {h.ready} shards READY in {elapsed:.1f} s (identify floor {floor:.1f} s); "
                         f"status page: {self.status_url}{token}")
        return p

    async def settle_generations(self, p: Plan, client: aioredis.Redis) -> None:
        """Record ``p``'s generation as the only one (a launch, or the end of a reshard): it handles everything."""
        await clear_acks(client, self.keys)
        await write_generations(client, self.keys, GenerationState(p.generation))

    async def store_plan(self, client: aioredis.Redis, p: Plan) -> None:
        """The plan in effect: in Redis, for every process, and in ``run/plan.json``, for a Redis that lost it."""
        await store_plan(client, self.keys, p)
        write_private(self.run_dir / PLAN_FILE, json.dumps(p.as_dict(), indent=1))

    async def current_plan(self, client: aioredis.Redis) -> Plan:
        """The plan in Redis; or, when Redis lost it (restarted without persistence), the launcher's copy,
        stored back in Redis.

        Raises
        ------
        InnkeeperError
            ``CLUSTER_UNHEALTHY`` when neither has one (nothing was launched here).
        """
        p = await load_plan(client, self.keys)
        if p is not None:
            return p
        try:
            p = Plan.from_dict(json.loads((self.run_dir / PLAN_FILE).read_text()))
        except FileNotFoundError:
            p = None
        except (ValueError, TypeError, KeyError) as exc:
            _log.warning("ignoring a malformed %s: %s", PLAN_FILE, exc)
            p = None
        if p is None:
            raise InnkeeperError("no plan in Redis under this prefix: run `innkeeper launch` first",
                                 code=ErrorCode.CLUSTER_UNHEALTHY)
        self.out(f"Redis had no plan (restarted without its data?): restored it from {self.run_dir / PLAN_FILE}")
        await store_plan(client, self.keys, p)
        return p

    async def restart(self, *, cluster: int | None = None, rolling: bool = False) -> None:
        """Restart one cluster, every cluster at once, or every cluster one at a time (``rolling``)."""
        async with self.redis() as client:
            p = await self.current_plan(client)
            mine = [c.id for c in p.for_host(self.settings.host_index)]
            if cluster is not None:
                p.cluster(cluster)  # raises a clear error for an unknown id
                if cluster not in mine:
                    raise InnkeeperError(f"cluster-{cluster} runs on host {p.cluster(cluster).host_index}, not here",
                                         code=ErrorCode.USAGE)
            targets = [cluster] if cluster is not None else mine
            if rolling or cluster is not None:
                for cid in targets:
                    await self._restart_one(p, client, cid)
                return
            old = {cid: info["pid"] for cid, info in (await self._program_pids()).items()}
            self.out(f"restarting every cluster at once ({len(targets)})")
            await self.supervisor.stop_group(p.group)
            await self._mark_cold_start(p, client)
            await self.supervisor.call("startProcessGroup", p.group, False)
            await self.wait_ready(p, client, not_pids=old)

    async def _restart_one(self, p: Plan, client: aioredis.Redis, cid: int) -> None:
        name = f"{p.group}:cluster-{cid}"
        old_pid = int((await self.supervisor.process(name)).get("pid") or 0)
        self.out(f"restarting cluster-{cid}")
        started = time.monotonic()
        await self.supervisor.stop_process(name)
        await self.supervisor.start_process(name, wait=False)
        timeout = 2 * len(p.cluster(cid).shard_ids) * self.settings.identify_window_s + 60
        await self.wait_ready(p, client, clusters={cid}, not_pids={cid: old_pid}, timeout=timeout)
        self.out(f"cluster-{cid} READY again after {time.monotonic() - started:.1f} s")

    async def stop(self) -> bool:
        """Stop every program and shut supervisord down; False when it was not running.

        A supervisord this launcher is still starting (the start was interrupted) is waited for,
        then stopped too.
        """
        if self._daemon_start is not None:
            await asyncio.wait([self._daemon_start])
        try:
            pid = await self.supervisor.pid()
        except SupervisorUnavailable:
            return False
        try:
            for group in await self.cluster_groups():  # the bots first, while their peers still answer
                await self.supervisor.stop_group(group)
            await self.supervisor.call("stopAllProcesses", True)
        except SupervisorError as exc:
            _log.warning("stopping the programs: %s", exc)
        try:
            await self.supervisor.call("shutdown")
        except SupervisorUnavailable:
            pass
        gone = await asyncio.get_running_loop().run_in_executor(None, self.supervisor.wait_gone, pid, 60.0)
        if not gone:
            raise InnkeeperError(f"supervisord (pid {pid}) did not exit within 60 s", code=ErrorCode.SUPERVISOR)
        return True
