"""One bad input never takes a cluster down: malformed events and a rejected command sync, end to end.

A real simulator, a real ``python -m shard`` cluster under supervisord (launched by the launcher), Redis and
PostgreSQL. The simulator rejects the bulk overwrite of the application commands and sends malformed
dispatches; the cluster stays up on the same process and sessions, answers a prefix command, counts the
failures in its ``/metrics``, and syncs once the simulator accepts it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from cluster.launcher import Launcher
from cluster.status import read_status_port
from db.migrate import migrate
from innkeeper.settings import Settings
from ipc.keys import Keys
from tests.e2e.commands import reply_to
from tests.procs import SimulatorProc, bot_api, http_json, start_simulator, stop_launcher
from tests.support import IPC_KEYS, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SHARDS, GUILDS, WINDOW = 2, 20, 0.2
_DISCORD_EPOCH_MS = 1_420_070_400_000


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    with start_simulator(tmp_path / "sim", guilds=GUILDS, shards=SHARDS, identify_window=WINDOW) as proc:
        yield proc


@pytest.fixture
async def launcher(sim: SimulatorProc, tmp_path: Path, redis_url: str, redis_prefix: str,
                   database_url: str) -> AsyncIterator[Launcher]:
    run_dir = tmp_path / "run"
    settings = Settings.from_env({
        "DISCORD_TOKEN": sim.token, "DISCORD_API_URL": sim.url, "INNKEEPER_REDIS_PREFIX": redis_prefix,
        "REDIS_URL": redis_url, "DATABASE_URL": database_url, "INNKEEPER_RUN_DIR": str(run_dir),
        "INNKEEPER_STATUS_PORT": "0", "INNKEEPER_METRICS_PORT_BASE": "0", "INNKEEPER_IDENTIFY_WINDOW": str(WINDOW),
        "INNKEEPER_IDENTIFY_MARGIN": "0", "INNKEEPER_HEARTBEAT_INTERVAL": "0.5", "INNKEEPER_HEARTBEAT_TTL": "5",
        "INNKEEPER_LOG_FORMAT": "json", "INNKEEPER_IPC_KEYS": IPC_KEYS,
        "INNKEEPER_SYNC_COMMANDS": "true", "INNKEEPER_COMMAND_SYNC_RETRY": "0.2",
    })
    await migrate(database_url)
    launcher = Launcher(settings, out=lambda _line: None)
    try:
        yield launcher
    finally:
        await stop_launcher(launcher)


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, session.get(url) as r:
        return r.status, await (r.json() if r.content_type == "application/json" else r.text())


async def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The cluster's samples: (name, sorted labels) → value."""
    status, text = await _get(url)
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _snowflake() -> str:
    return str((int(time.time() * 1000) - _DISCORD_EPOCH_MS) << 22)


def _malformed_message(guild: dict[str, Any], content: str) -> dict[str, Any]:
    """A MESSAGE_CREATE that could invoke a command, whose member's roles are objects instead of ids."""
    author = guild["members"][1]
    return {
        "id": _snowflake(), "channel_id": guild["channels"][0], "guild_id": guild["id"], "content": content,
        "type": 0, "author": {"id": author, "username": "mallory", "discriminator": "0", "avatar": None},
        "member": {"roles": [{"id": guild["id"], "name": "@everyone"}], "joined_at": "2020-01-01T00:00:00+00:00",
                   "deaf": False, "mute": False, "flags": 0},
        "timestamp": "2020-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
        "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
        "pinned": False,
    }


async def _fault(sim: SimulatorProc, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/faults", body)
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


async def _ping(sim: SimulatorProc, guild: dict[str, Any], bot_id: str) -> dict[str, Any]:
    """Post ``!ping`` as a member and wait for the bot's Pong! to it."""
    channel = guild["channels"][0]
    status, posted = await asyncio.to_thread(http_json, "POST", sim.url + "/_sim/messages", {
        "guild_id": guild["id"], "channel_id": channel, "author_id": guild["members"][0], "content": "!ping"})
    assert status == 200, posted

    async def reply() -> dict[str, Any] | None:
        return await reply_to(sim, channel, posted["id"])

    message = await wait_for(reply, timeout=20, message="the bot's reply to !ping")
    assert message["author"]["id"] == bot_id and str(message["content"]).startswith("Pong!"), message
    return message


async def test_malformed_events_and_a_rejected_sync_leave_the_cluster_up(
        launcher: Launcher, sim: SimulatorProc, redis: aioredis.Redis, redis_prefix: str) -> None:
    # Discord (here, the simulator) rejects every bulk overwrite of the commands until told otherwise.
    await _fault(sim, {"kind": "http_error", "route": "PUT /commands", "status": 400, "count": 1_000_000})
    await launcher.launch(clusters=1, timeout=90)  # every shard READY although the sync fails
    await wait_for(lambda: read_status_port(launcher.run_dir), timeout=20, message="the status service's port")
    status_url = f"http://127.0.0.1:{read_status_port(launcher.run_dir)}"
    _, doc = await _get(status_url + "/status.json")
    [cluster] = doc["clusters"]
    pid, metrics_url = cluster["pid"], f"http://127.0.0.1:{cluster['metrics_port']}/metrics"
    world = sim.world(limit=GUILDS)
    bot_id = world["bot_id"]
    guild = world["guilds"][0]

    async def sync_failing() -> bool:
        samples = await _metrics(metrics_url)
        return (_sample(samples, "innkeeper_command_syncs_total", outcome="failed") >= 2
                and _sample(samples, "innkeeper_command_sync_pending") == 1.0)
    await wait_for(sync_failing, timeout=20, message="the failing sync retried and reported pending")
    await _ping(sim, guild, bot_id)  # prefix commands work while the sync fails

    # Malformed events: the roles of a message's member as objects, a role without a usable id.
    sessions = {sid: s["sessions"] for sid, s in sim.stats()["shards"].items()}
    bad = await _fault(sim, {"kind": "dispatch", "event": "MESSAGE_CREATE", "guild_id": guild["id"],
                             "data": _malformed_message(guild, "!ping")})
    assert bad["applied"] == 1
    other = world["guilds"][1]
    bad = await _fault(sim, {"kind": "dispatch", "event": "GUILD_ROLE_CREATE", "guild_id": other["id"],
                             "data": {"guild_id": other["id"], "role": {"id": "not-an-id", "name": "x"}}})
    assert bad["applied"] == 1

    async def counted() -> bool:
        samples = await _metrics(metrics_url)
        return (_sample(samples, "innkeeper_events_failed_total", event="MESSAGE_CREATE", stage="parse") == 1
                and _sample(samples, "innkeeper_events_failed_total", event="GUILD_ROLE_CREATE", stage="parse") == 1)
    await wait_for(counted, timeout=20, message="both malformed events counted")
    await _ping(sim, guild, bot_id)  # the same shard answers the next command
    await _ping(sim, other, bot_id)

    # Discord accepts the commands again: the retry syncs them and stores their hash.
    status, cleared = await asyncio.to_thread(http_json, "DELETE", sim.url + "/_sim/faults")
    assert status == 200 and cleared["cleared"] == 1

    async def synced() -> bool:
        samples = await _metrics(metrics_url)
        return (_sample(samples, "innkeeper_command_syncs_total", outcome="synced") == 1
                and _sample(samples, "innkeeper_command_sync_pending") == 0.0)
    await wait_for(synced, timeout=60, message="the commands synced once the simulator accepts them")
    digest = await redis.get(Keys(redis_prefix).commands_synced())
    assert digest is not None and len(digest) == 64
    code, registered = await asyncio.to_thread(bot_api, sim, "GET", f"/api/v10/applications/{bot_id}/commands")
    assert code == 200 and "ping" in {c["name"] for c in registered}, registered

    # The same process and the same gateway sessions all along: nothing restarted or reconnected.
    _, doc = await _get(status_url + "/status.json")
    assert [(c["pid"], c["state"]) for c in doc["clusters"]] == [(pid, "READY")]
    assert {sid: s["sessions"] for sid, s in sim.stats()["shards"].items()} == sessions
    info = await launcher.supervisor.process("clusters:cluster-0")
    assert info["statename"] in ("STARTING", "RUNNING") and info["pid"] == pid  # RUNNING once up for startsecs
    log = (launcher.run_dir / "logs" / "cluster-0.log").read_text()
    assert "[E2008] MESSAGE_CREATE failed (parse) on shard" in log and "[E2007] application command sync failed" in log
