"""Discord's invalid-request ban, end to end: stock discord.py gets banned under a 429 storm, our clusters don't.

Two simulators with the same scaled-down ban (``--invalid-request-limit 60`` per 600 s, a 600 s
ban; Discord's is 10,000 per 10 minutes), one per arm, since the ban is per IP and every process
of a test shares 127.0.0.1. Both get the same storm: every message send answers 429 (scope
``user``, so it counts), and the test posts the same messages, one per guild, that each bot answers
in the channel.

* **Stock discord.py** (two ``naive_bot.py --reply`` processes, one per shard) rides out each 429
  with its own retries, counts nothing, and is banned: the simulator then answers it with
  Cloudflare's HTML 429 only.
* **Our clusters** (two ``python -m shard`` processes on one Redis prefix) share the
  invalid-request guard through Redis, scaled to the same ban (``INNKEEPER_GUARD_HARD=30``): once
  the fleet's count reaches it, requests are refused before they leave. Users of slash commands are
  told (``E2006``, "The bot is cooling down…") through the interaction callback and follow-ups,
  which the guard never refuses. The storm goes on; the simulator never bans.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from innkeeper.settings import PROJECT_ROOT
from tests.procs import Proc, SimulatorProc, cluster_env, http_json, spawn, start_cluster, start_simulator
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LIMIT, WINDOW, BAN = 60, 600.0, 600.0
SIM_ARGS = ("--invalid-request-limit", str(LIMIT), "--invalid-request-window", str(WINDOW),
            "--invalid-request-ban", str(BAN))
STORM = {"kind": "http_error", "status": 429, "scope": "user", "retry_after": 0.05, "route": "POST /channels",
         "count": 1_000_000}
MESSAGES = 40


async def _post(sim: SimulatorProc, path: str, body: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(http_json, "POST", sim.url + path, body)


async def _storm(sim: SimulatorProc, guilds: list[dict[str, Any]], count: int, start: int = 0) -> None:
    """``count`` messages from members, one guild after another, each answered in its channel by the bots."""
    for i in range(start, start + count):
        guild = guilds[i % len(guilds)]
        status, body = await _post(sim, "/_sim/messages", {
            "guild_id": guild["id"], "channel_id": guild["channels"][0],
            "author_id": guild["members"][1 + (i // len(guilds)) % (len(guild["members"]) - 1)], "content": "!ping"})
        assert status == 200, body
        await asyncio.sleep(0.05)


def _stats(sim: SimulatorProc) -> dict[str, Any]:
    stats = sim.stats()
    return {k: stats[k] for k in ("invalid_requests", "invalid_request_bans", "banned_requests")}


async def test_stock_discord_py_is_banned(tmp_path: Path) -> None:
    script = str(PROJECT_ROOT / "tests" / "e2e" / "naive_bot.py")
    with start_simulator(tmp_path / "logs", guilds=20, shards=2, max_concurrency=2, extra_args=SIM_ARGS) as sim:
        procs: list[Proc] = [spawn(f"naive-{s}", [script, "--reply", sim.url, sim.token, str(s), "2"],
                                   tmp_path / "logs") for s in (0, 1)]
        try:
            await wait_for(lambda: all("READY" in p.output() for p in procs), timeout=60,
                           message="both stock processes READY")
            assert (await _post(sim, "/_sim/faults", STORM))[0] == 200
            guilds = sim.world(limit=20)["guilds"]
            await _storm(sim, guilds, MESSAGES)
            await wait_for(lambda: _stats(sim)["invalid_request_bans"] >= 1, timeout=60, message="a ban")
            await wait_for(lambda: _stats(sim)["banned_requests"] >= 1, timeout=60,
                           message="requests refused by the ban")
            stats = _stats(sim)
            print("stock discord.py:", stats)
            assert stats["invalid_requests"] > LIMIT, stats
        finally:
            for p in procs:
                p.stop()


async def test_our_clusters_are_never_banned_and_users_are_told(tmp_path: Path, migrated_db: str,
                                                                redis_url: str, redis_prefix: str) -> None:
    with start_simulator(tmp_path / "logs", guilds=20, shards=2, max_concurrency=2, extra_args=SIM_ARGS) as sim:
        env = cluster_env(sim, redis_prefix, redis_url=redis_url, database_url=migrated_db, extra={
            "INNKEEPER_GUARD_HARD": "30", "INNKEEPER_GUARD_SOFT": "15", "INNKEEPER_GUARD_PROCESSES": "2",
            "INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_SYNC_COMMANDS": "true"})
        procs = [start_cluster(tmp_path / "logs", env, cluster=s, shard_ids=str(s), shard_count=2) for s in (0, 1)]
        guilds = sim.world(limit=20)["guilds"]
        try:
            async def answers(guild: dict[str, Any]) -> bool:
                assert all(p.alive() for p in procs), [p.output()[-2000:] for p in procs]
                status, _ = await _post(sim, "/_sim/interactions", {
                    "guild_id": guild["id"], "channel_id": guild["channels"][0], "user_id": guild["members"][1],
                    "name": "ping", "options": [], "timeout": 3})
                return status == 200

            for shard in (0, 1):
                guild = next(g for g in guilds if g["shard_id"] == shard)
                await wait_for(lambda g=guild: answers(g), timeout=90, interval=0.5,  # type: ignore[misc]
                               message=f"cluster of shard {shard} answering")

            assert (await _post(sim, "/_sim/faults", STORM))[0] == 200
            await _storm(sim, guilds, MESSAGES)

            # a user of a slash command whose work needs Discord (a DM) is told what is happening
            users = iter((g, m) for g in guilds for m in g["members"][2:])

            async def told() -> str | None:
                guild, user = next(users)
                status, report = await _post(sim, "/_sim/interactions", {
                    "guild_id": guild["id"], "channel_id": guild["channels"][0], "user_id": user,
                    "name": "privacy", "options": [{"name": "export", "type": 1, "options": []}], "timeout": 10})
                assert status == 200, report
                text = await _answer(sim, report)
                return text if "(E2006)" in text else None

            text = await wait_for(told, timeout=90, interval=0.5, message="a user told the bot is cooling down")
            assert text.startswith("The bot is cooling down"), text

            await _storm(sim, guilds, MESSAGES, start=MESSAGES)  # the storm goes on
            await asyncio.sleep(1.0)
            stats = _stats(sim)
            print("our clusters:", stats, "told:", text)
            assert stats["invalid_request_bans"] == 0 and stats["banned_requests"] == 0, stats
            assert stats["invalid_requests"] <= LIMIT, stats
            assert all(p.alive() for p in procs)
        finally:
            for p in procs:
                p.stop()


async def _answer(sim: SimulatorProc, report: dict[str, Any]) -> str:
    """The user's answer: the message of the callback, or the first follow-up after a deferral."""
    callback = report["callback"]
    if callback["type"] == 4:
        return str(callback["data"].get("content") or "")
    iid = report["interaction_id"]

    async def first() -> str | None:
        status, data = await asyncio.to_thread(http_json, "GET", f"{sim.url}/_sim/interactions/{iid}")
        assert status == 200, data
        msgs = [*(data.get("original_edits") or []), *(data.get("followups") or [])]
        return str(msgs[0].get("content") or "") if msgs else None

    return await wait_for(first, timeout=20, message=f"the follow-up of interaction {iid}")
