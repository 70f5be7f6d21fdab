"""The cluster runtime end to end: real supervisord, Redis, simulator and ``python -m shard`` processes.

Each test gets its own run directory (so its own supervisord and socket), Redis prefix and database;
every process binds port 0 and reports its port (the simulator in a port file, the status service in
``status.port`` in the run directory, each cluster's ``/metrics`` in its heartbeat), and the test tears
supervisord and every process down even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from cluster.launcher import Launcher, LaunchFailed
from cluster.ops import format_status
from cluster.plan import Plan, plan
from cluster.reshard import Resharder
from cluster.state import load_plan, read_status
from cluster.status import read_status_port
from cluster.supervisor import Supervisor
from innkeeper.errors import ErrorCode, InnkeeperError
from innkeeper.settings import Settings
from ipc.keys import Keys
from tests.e2e.commands import channel_messages
from tests.procs import SimulatorProc, http_json, start_simulator, stop_launcher
from tests.support import IPC_KEYS, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SHARDS, CLUSTERS, GUILDS, MC, WINDOW = 16, 4, 2000, 4, 0.2
#: No margin past the window: the identify queue starts each window from the READY that
#: acknowledged the previous IDENTIFY, so it needs none, however late the (loaded) simulator stamps.
MARGIN = 0.0


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    with start_simulator(tmp_path / "sim", guilds=GUILDS, shards=SHARDS, max_concurrency=MC,
                         identify_window=WINDOW) as proc:
        yield proc


@dataclass
class Env:
    sim: SimulatorProc
    settings: Settings
    launcher: Launcher
    lines: list[str]

    @property
    def status_url(self) -> str:
        """The status service's address: the port it bound and wrote to ``status.port`` in the run directory."""
        port = read_status_port(self.launcher.run_dir)
        assert port, f"the status service has not written {self.launcher.run_dir}/status.port"
        return f"http://127.0.0.1:{port}"


def _env(sim: SimulatorProc, run_dir: Path, prefix: str, redis_url: str, database_url: str, **extra: str) -> Settings:
    return Settings.from_env({
        "DISCORD_TOKEN": sim.token, "DISCORD_API_URL": sim.url, "INNKEEPER_REDIS_PREFIX": prefix,
        "REDIS_URL": redis_url, "DATABASE_URL": database_url, "INNKEEPER_RUN_DIR": str(run_dir),
        "INNKEEPER_STATUS_PORT": "0", "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_IDENTIFY_WINDOW": str(WINDOW),
        "INNKEEPER_IDENTIFY_MARGIN": str(MARGIN),
        "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_HEARTBEAT_TTL": "5", "INNKEEPER_LOG_FORMAT": "json",
        "INNKEEPER_SYNC_COMMANDS": "false", "INNKEEPER_IPC_KEYS": IPC_KEYS,
        # the auto-reshard helper only reports here, unless a test turns it on
        "INNKEEPER_AUTO_RESHARD": "false", **extra,
    })


@contextlib.asynccontextmanager
async def _running(sim: SimulatorProc, settings: Settings, database_url: str) -> AsyncIterator[Env]:
    """A migrated database and a launcher on ``settings``; every process it started is stopped afterwards."""
    from db.migrate import migrate

    await migrate(database_url)
    lines: list[str] = []
    launcher = Launcher(settings, out=lines.append)
    try:
        yield Env(sim, settings, launcher, lines)
    finally:
        await stop_launcher(launcher)
        # Nothing of this test may outlive it.
        assert not (launcher.run_dir / "supervisor.sock").exists() or not await launcher.supervisor.is_running()


@pytest.fixture
async def env(sim: SimulatorProc, tmp_path: Path, redis_url: str, redis_prefix: str,
              database_url: str) -> AsyncIterator[Env]:
    async with _running(sim, _env(sim, tmp_path / "run", redis_prefix, redis_url, database_url), database_url) as e:
        yield e


def _violations(sim: SimulatorProc) -> str:
    """The simulator's log lines about refused IDENTIFYs, for failure messages."""
    return "\n".join(line for line in sim.output().splitlines() if "op 9" in line or "identified" in line)


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, session.get(url) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body


async def _launch(e: Env) -> Plan:
    p = await e.launcher.launch(clusters=CLUSTERS, timeout=120)
    assert p == plan(SHARDS, MC, clusters=CLUSTERS)
    await wait_for(lambda: read_status_port(e.launcher.run_dir), timeout=20, message="the status service's port")
    return p


async def _healthz_ok(e: Env) -> bool:
    try:
        return (await _get(e.status_url + "/healthz"))[0] == 200
    except aiohttp.ClientError:
        return False


async def test_cold_start_every_shard_ready_without_violations(env: Env) -> None:
    started = time.monotonic()
    await _launch(env)
    elapsed = time.monotonic() - started
    assert any("16/16 shards READY" in line for line in env.lines), env.lines
    assert any(line.startswith("all 16 shards READY") and "status page" in line for line in env.lines)
    stats = env.sim.stats()
    assert stats["identify_violations"] == 0, _violations(env.sim)
    assert stats["identifies"] == SHARDS
    await wait_for(lambda: _healthz_ok(env), timeout=20, message="/healthz 200")
    # the status service runs without the token, the keys or the database URL, in its environment or its file
    status_pid = (await env.launcher.supervisor.process("status"))["pid"]
    raw_environ = await asyncio.to_thread(Path(f"/proc/{status_pid}/environ").read_bytes)
    environ = dict(item.split(b"=", 1) for item in raw_environ.split(b"\0") if b"=" in item)
    status_file = await asyncio.to_thread((env.launcher.run_dir / "status-settings.json").read_text)
    for secret in ("DISCORD_TOKEN", "INNKEEPER_IPC_KEYS", "DATABASE_URL", "INNKEEPER_ENCRYPTION_KEYS"):
        assert secret.encode() not in environ and secret not in status_file, secret
    status, doc = await _get(env.status_url + "/status.json")
    assert status == 200 and doc["shard_count"] == SHARDS and doc["max_concurrency"] == MC
    assert [c["state"] for c in doc["clusters"]] == ["READY"] * CLUSTERS
    shards = [s for c in doc["clusters"] for s in c["shards"]]
    assert [s["id"] for s in shards] == list(range(SHARDS))
    assert sum(s["guilds"] for s in shards) == GUILDS
    ports = {c["metrics_port"] for c in doc["clusters"]}
    assert None not in ports and len(ports) == CLUSTERS
    status, metrics = await _get(f"http://127.0.0.1:{doc['clusters'][2]['metrics_port']}/metrics")
    assert status == 200 and 'innkeeper_shard_up{cluster="2",shard="9"} 1.0' in metrics
    assert 'innkeeper_gateway_events_total{cluster="2",type="GUILD_CREATE"}' in metrics
    # A relaunch with the same plan changes nothing and is READY at once.
    env.lines.clear()
    await _launch(env)
    assert not any("supervisord:" in line for line in env.lines), env.lines
    assert env.sim.stats()["identifies"] == SHARDS
    print(f"cold start of {SHARDS} shards in {CLUSTERS} clusters: {elapsed:.1f} s")


async def _snapshots_saved(e: Env, shard_ids: range) -> None:
    """Wait until the clusters saved the guild snapshots of ``shard_ids`` (each shard's, once it has its guilds)."""
    keys = Keys(e.settings.redis_prefix)
    client = aioredis.from_url(e.settings.redis_url)
    try:
        async def saved() -> bool:
            return all([await client.exists(keys.shard_snapshot_index(sid)) for sid in shard_ids])
        await wait_for(saved, timeout=20, message=f"guild snapshots of shards {list(shard_ids)}")
    finally:
        await client.aclose()


async def test_kill_9_one_cluster_is_restarted_and_the_others_stay(env: Env) -> None:
    await _launch(env)
    await wait_for(lambda: _healthz_ok(env), timeout=20, message="/healthz 200")
    _, before = await _get(env.status_url + "/status.json")
    pids = {c["id"]: c["pid"] for c in before["clusters"]}
    await _snapshots_saved(env, range(4, 8))
    shard_stats = env.sim.stats()["shards"]
    os.kill(pids[1], signal.SIGKILL)

    async def restarted() -> bool:
        _, doc = await _get(env.status_url + "/status.json")
        c1 = doc["clusters"][1]
        return c1["pid"] not in (None, pids[1]) and c1["state"] == "READY"
    await wait_for(restarted, timeout=60, message="cluster-1 restarted by supervisord and READY")
    await wait_for(lambda: _healthz_ok(env), timeout=20, message="/healthz 200 again")
    _, after = await _get(env.status_url + "/status.json")
    assert {c["id"]: c["pid"] for c in after["clusters"] if c["id"] != 1} == {k: v for k, v in pids.items() if k != 1}
    stats = env.sim.stats()
    assert stats["identify_violations"] == 0, _violations(env.sim)
    assert stats["identifies"] == SHARDS  # the restarted cluster RESUMEd its sessions: 0 identifies
    for sid in range(SHARDS):
        assert stats["shards"][str(sid)]["identifies"] == shard_stats[str(sid)]["identifies"] == 1, sid
        if not 4 <= sid < 8:  # the other clusters' shards: same sessions, no close
            assert stats["shards"][str(sid)]["sessions"] == shard_stats[str(sid)]["sessions"], sid
        else:  # cluster 1's shards resumed the sessions the killed process left
            assert stats["shards"][str(sid)]["resumes"] == shard_stats[str(sid)]["resumes"] + 1, sid
    # the rebuilt cache: every guild is known again, without a GUILD_CREATE
    assert sum(s["guilds"] for c in after["clusters"] for s in c["shards"]) == GUILDS


class _WatchedSupervisor(Supervisor):
    """A supervisord client that runs a check before each ``stopProcess`` (the moment a cluster goes down)."""

    __slots__ = ("before_stop",)

    def __init__(self, run_dir: Path, before_stop: Callable[[str], Awaitable[None]]) -> None:
        super().__init__(run_dir)
        self.before_stop = before_stop

    async def stop_process(self, name: str, wait: bool = True) -> None:
        await self.before_stop(name)
        await super().stop_process(name, wait)


async def test_rolling_restart_keeps_three_of_four_clusters_ready(env: Env) -> None:
    p = await _launch(env)
    _, before = await _get(env.status_url + "/status.json")
    old = {c["id"]: c["pid"] for c in before["clusters"]}
    stopped: list[int] = []

    async def others_up(name: str) -> None:
        """Each time a cluster is taken down, every other cluster is READY and connected."""
        cid = int(name.rsplit("-", 1)[1])
        _, doc = await _get(env.status_url + "/status.json")
        ready = {c["id"] for c in doc["clusters"] if c["state"] == "READY"}
        live = {int(s) for s, n in env.sim.stats()["live_shards"].items() if n}
        others = [c for c in p.clusters if c.id != cid]
        assert ready >= {c.id for c in others}, (name, doc)
        assert live >= {s for c in others for s in c.shard_ids}, (name, live)
        stopped.append(cid)

    env.launcher.supervisor = _WatchedSupervisor(env.launcher.run_dir, others_up)
    await env.launcher.restart(rolling=True)
    assert stopped == list(range(CLUSTERS)), stopped  # one at a time, in order, each once
    ready_again = [line for line in env.lines if "READY again" in line]
    assert [line.split()[0] for line in ready_again] == [f"cluster-{c}" for c in range(CLUSTERS)], env.lines
    _, after = await _get(env.status_url + "/status.json")
    assert all(c["pid"] != old[c["id"]] for c in after["clusters"])
    assert all(c["state"] == "READY" for c in after["clusters"])
    stats = env.sim.stats()
    assert stats["identify_violations"] == 0, _violations(env.sim)
    assert stats["identifies"] == SHARDS  # each cluster handed its sessions to the next process: 0 identifies
    assert stats["lost"] == 0
    for sid in range(SHARDS):  # each stop closed resumably (never 1000/1001, which end a session), and resumed
        shard = stats["shards"][str(sid)]
        assert shard["resumes"] == 1 and not {"1000", "1001"} & set(shard["closes"]), (sid, shard)
    assert sum(s["guilds"] for c in after["clusters"] for s in c["shards"]) == GUILDS


async def test_bad_token_fails_clearly_and_does_not_loop(sim: SimulatorProc, tmp_path: Path, redis_url: str,
                                                         redis_prefix: str, database_url: str) -> None:
    run_dir = tmp_path / "run"
    bad = _env(sim, run_dir, redis_prefix, redis_url, database_url, DISCORD_TOKEN="not-the-token")
    launcher = Launcher(bad, out=lambda _line: None)
    # `innkeeper launch` itself refuses at once: GET /gateway/bot answers 401.
    with pytest.raises(InnkeeperError, match="token was rejected"):
        await launcher.launch()
    # A cluster started with the bad token anyway exits 78 (EX_CONFIG), which nothing restarts. Dying
    # within startsecs, supervisord retries it startretries times, then FATAL; on a loaded machine it
    # can outlive startsecs: then it is one EXITED attempt (an expected exit code, no crash to guard).
    p = plan(4, MC, clusters=1)
    try:
        async with launcher.redis() as client:
            await launcher.apply_plan(p, client)
            with pytest.raises(LaunchFailed, match="cluster-0 is (FATAL|EXITED)") as info:
                await launcher.wait_ready(p, client, timeout=90)
        assert "login failed" in str(info.value) or "token" in str(info.value)
        process = await launcher.supervisor.process("clusters:cluster-0")
        assert process["statename"] == "FATAL" or (process["statename"], process["exitstatus"]) == ("EXITED", 78)
        assert sim.stats()["identifies"] == 0
        log = (run_dir / "logs" / "cluster-0.log").read_text()
        assert 1 <= log.count("login failed") <= launcher.policy.startretries + 1
    finally:
        await stop_launcher(launcher)


async def _bot_messages(sim: SimulatorProc, channel: str) -> list[dict[str, Any]]:
    return [m for m in await channel_messages(sim, channel) if m["author"].get("bot")]


async def test_reshard_8_to_16_without_downtime_answers_every_command_once(env: Env) -> None:
    """Prefix and slash commands flow all through `innkeeper reshard` 8 → 16: each is answered exactly once,
    by the old generation before the switch and the new one after; no identify violation."""
    old = await env.launcher.launch(shards=8, clusters=2, timeout=120)
    assert old == plan(8, MC, clusters=2)
    await wait_for(lambda: read_status_port(env.launcher.run_dir), timeout=20, message="the status service's port")
    await wait_for(lambda: _healthz_ok(env), timeout=20, message="/healthz 200")
    guilds = env.sim.world(limit=500)["guilds"]
    stop = asyncio.Event()
    prefixes: list[str] = []  # channels that got one `!ping` each (one command per guild: no channel limit)
    slashes: list[tuple[int, Any]] = []
    overlap: list[dict[str, Any]] = []

    async def prefix(g: dict[str, Any]) -> None:
        status, body = await asyncio.to_thread(http_json, "POST", env.sim.url + "/_sim/messages", {
            "guild_id": g["id"], "channel_id": g["channels"][0], "author_id": g["members"][1], "content": "!ping"})
        assert status == 200, body
        prefixes.append(g["channels"][0])

    async def slash(g: dict[str, Any]) -> None:
        slashes.append(await asyncio.to_thread(http_json, "POST", env.sim.url + "/_sim/interactions", {
            "guild_id": g["id"], "channel_id": g["channels"][0], "user_id": g["members"][1], "name": "ping",
            "options": [], "timeout": 10}))

    async def traffic() -> None:
        sent: list[asyncio.Task[None]] = []
        for i, g in enumerate(guilds):  # ~8 commands/s, alternately prefix and slash, each guild once
            sent.append(asyncio.create_task(prefix(g) if i % 2 else slash(g)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.125)
            if stop.is_set():
                break
        else:
            raise AssertionError("the test ran out of guilds before the reshard finished")
        await asyncio.gather(*sent)

    async def watch_status() -> None:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                _, doc = await _get(env.status_url + "/status.json")
                if doc.get("reshard"):
                    overlap.append(doc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)

    # the identify budget first: with 1000 left and 990 kept in reserve, 16 new shards do not fit
    short = Launcher(dataclasses.replace(env.settings, identify_reserve=990), out=env.lines.append)
    with pytest.raises(InnkeeperError) as refused:
        await Resharder(short).run(shards=16, clusters=4)
    assert refused.value.code is ErrorCode.IDENTIFY_BUDGET and "16 shards needs 16" in refused.value.message
    assert sorted(p.name for p in env.launcher.run_dir.glob("clusters*.conf")) == ["clusters.conf"]
    assert env.sim.stats()["identifies"] == 8

    sender, watcher = asyncio.create_task(traffic()), asyncio.create_task(watch_status())
    try:
        await wait_for(lambda: len(prefixes) >= 4, timeout=20, message="commands flowing before the reshard")
        env.lines.clear()
        new = await Resharder(env.launcher).run(shards=16, clusters=4)
        after = len(prefixes)
        await wait_for(lambda: len(prefixes) >= after + 4, timeout=20, message="commands after the reshard")
    finally:
        stop.set()
        await asyncio.gather(sender, watcher)

    assert new == plan(16, MC, clusters=4, generation=1, first_id=2)
    assert any(line.startswith("resharding without downtime: 8 → 16 shards") for line in env.lines), env.lines
    assert any(line.startswith("switched: generation 1") for line in env.lines), env.lines
    assert any(line.startswith("resharded 8 → 16 shards") for line in env.lines), env.lines
    # every slash command answered once: a 504 would be one unanswered, a second callback is counted
    stats = env.sim.stats()
    unanswered = [(b, http_json("GET", f"{env.sim.url}/_sim/interactions/{b['interaction_id']}")[1])
                  for st, b in slashes if st != 200]
    assert not unanswered, (unanswered, stats["late_interaction_callbacks"], env.lines)
    assert stats["duplicate_interaction_callbacks"] == 0
    assert stats["identify_violations"] == 0, _violations(env.sim)
    assert stats["identifies"] == 8 + 16

    # every prefix command answered once (one command per channel): by cluster 0-1 before the switch, 2-5 after
    async def answered() -> bool:
        return all([len(await _bot_messages(env.sim, ch)) >= 1 for ch in prefixes])
    await wait_for(answered, timeout=30, message="an answer to every prefix command")
    answers = [await _bot_messages(env.sim, ch) for ch in prefixes]
    assert [len(a) for a in answers] == [1] * len(prefixes), [a for a in answers if len(a) != 1]
    clusters = [int(a[0]["content"].split("cluster ")[1].split(",")[0]) for a in answers]
    assert set(clusters) & {0, 1} and set(clusters) & {2, 3, 4, 5}, clusters
    first_new = next(i for i, c in enumerate(clusters) if c >= 2)
    assert all(c >= 2 for c in clusters[first_new:]), clusters  # no old answer after the first new one

    # during the overlap status showed both generations
    assert any({c["generation"] for c in doc["clusters"]} == {0, 1} for doc in overlap), overlap[-1:]
    assert {doc["reshard"]["phase"] for doc in overlap} >= {"starting"}
    # the new plan alone: READY, in Redis, in supervisord; the old programs and sessions are gone
    await wait_for(lambda: _healthz_ok(env), timeout=30, message="/healthz 200 on the new plan")
    _, doc = await _get(env.status_url + "/status.json")
    assert doc["shard_count"] == 16 and [c["id"] for c in doc["clusters"]] == [2, 3, 4, 5] and "reshard" not in doc
    assert all(c["state"] == "READY" and c["generation"] == 1 and c["handles"] == "all" for c in doc["clusters"])
    assert sum(s["guilds"] for c in doc["clusters"] for s in c["shards"]) == GUILDS
    procs = await env.launcher.supervisor.processes()
    assert {n for n in procs if "cluster-" in n} == {f"clusters-g1:cluster-{i}" for i in range(2, 6)}, procs
    async with env.launcher.redis() as client:
        assert await load_plan(client, env.launcher.keys) == new
    assert not (env.launcher.run_dir / "clusters.conf").exists()
    live = env.sim.stats()["live_shards"]
    assert {int(k): v for k, v in live.items() if v} == dict.fromkeys(range(16), 1), live
    print(f"reshard 8 → 16 under traffic: {len(prefixes)} prefix and {len(slashes)} slash commands, each answered "
          f"once ({first_new} by generation 0 first)\n" + "\n".join(env.lines))


async def _advice(e: Env) -> dict[str, Any] | None:
    with contextlib.suppress(aiohttp.ClientError, AssertionError):
        _, doc = await _get(e.status_url + "/status.json")
        return doc.get("auto_reshard")  # type: ignore[no-any-return]
    return None


def _recommend(sim: SimulatorProc, shards: int) -> None:
    status, body = http_json("POST", sim.url + "/_sim/gateway", {"shards": shards})
    assert status == 200 and body == {"shards": shards}, body


@pytest.fixture
async def auto_env(sim: SimulatorProc, tmp_path: Path, redis_url: str, redis_prefix: str,
                   database_url: str) -> AsyncIterator[Env]:
    """The cluster runtime with the auto-reshard helper on, checking every second."""
    settings = _env(sim, tmp_path / "run", redis_prefix, redis_url, database_url, INNKEEPER_AUTO_RESHARD="true",
                    INNKEEPER_AUTO_RESHARD_INTERVAL="1")
    async with _running(sim, settings, database_url) as e:
        yield e


async def test_auto_reshard_follows_discords_recommendation(auto_env: Env) -> None:
    """Discord recommends 16 shards where 8 run: the helper reshards without downtime by itself."""
    e = auto_env
    await asyncio.to_thread(_recommend, e.sim, 8)
    first = await e.launcher.launch(clusters=2, timeout=120)
    assert first.shard_count == 8
    await wait_for(lambda: read_status_port(e.launcher.run_dir), timeout=20, message="the status service's port")
    await wait_for(lambda: _healthz_ok(e), timeout=20, message="/healthz 200")
    advice = await wait_for(lambda: _advice(e), timeout=20, message="the helper's first check")
    assert (advice["recommended"], advice["running"], advice["target"], advice["action"]) == (8, 8, None, "none")
    await asyncio.to_thread(_recommend, e.sim, 16)  # the bot grew

    async def resharded() -> dict[str, Any] | None:
        a = await _advice(e)
        return a if a is not None and a["action"] in ("resharded", "failed") else None
    advice = await wait_for(resharded, timeout=120, message="the helper to reshard to 16")
    assert advice["action"] == "resharded" and advice["running"] == 16, advice
    async with e.launcher.redis() as client:
        p = await load_plan(client, e.launcher.keys)
    assert p is not None and p.shard_count == 16 and p.generation == 1
    await wait_for(lambda: _healthz_ok(e), timeout=30, message="/healthz 200 on the new plan")
    assert e.sim.stats()["identify_violations"] == 0, _violations(e.sim)
    assert e.sim.stats()["identifies"] == 8 + 16
    log = await asyncio.to_thread((e.launcher.run_dir / "logs" / "innkeeper.log").read_text)
    assert "resharded 8 → 16 shards" in log, log[-2000:]


async def test_auto_reshard_off_reports_and_a_4011_is_checked_at_once(env: Env) -> None:
    """INNKEEPER_AUTO_RESHARD=false: the advice is only reported (status, metrics, `innkeeper status`); a cluster
    closed with 4011 makes the helper ask Discord at once, not at its next interval (an hour away)."""
    env.settings = dataclasses.replace(env.settings, auto_reshard_interval_s=3600.0)
    env.launcher = Launcher(env.settings, out=env.lines.append)
    await asyncio.to_thread(_recommend, env.sim, 8)
    await env.launcher.launch(clusters=2, timeout=120)
    await wait_for(lambda: read_status_port(env.launcher.run_dir), timeout=20, message="the status service's port")
    advice = await wait_for(lambda: _advice(env), timeout=20, message="the helper's first check")
    assert (advice["recommended"], advice["target"], advice["action"], advice["enabled"]) == (8, None, "none", False)
    await asyncio.to_thread(_recommend, env.sim, 16)  # not seen before the next interval...
    status, body = await asyncio.to_thread(http_json, "POST", env.sim.url + "/_sim/faults",
                                           {"kind": "disconnect", "shard_id": 0, "code": 4011})
    assert status == 200 and body["applied"] >= 1, body

    async def advised() -> dict[str, Any] | None:
        a = await _advice(env)
        return a if a is not None and a["action"] == "advised" else None
    advice = await wait_for(advised, timeout=30, message="the helper to check at once after the 4011")  # ...but now
    assert (advice["recommended"], advice["running"], advice["target"]) == (16, 8, 16), advice
    assert "cluster-0 closed with 4011" in advice["detail"], advice
    _, metrics = await _get(env.status_url + "/metrics")
    assert "innkeeper_status_reshard_wanted 16.0" in metrics and "innkeeper_status_shards_recommended 16.0" in metrics
    async with env.launcher.redis() as client:
        p = await load_plan(client, env.launcher.keys)
        _, doc = await read_status(client, env.launcher.keys)
    assert p is not None and (p.shard_count, p.generation) == (8, 0)  # only reported: nothing was resharded
    text = format_status(doc, None)
    assert "Discord recommends 16 shards" in text and "innkeeper reshard --shards 16" in text, text
    log = (env.launcher.run_dir / "logs" / "cluster-0.log").read_text()
    assert "gateway closed with fatal code 4011" in log
