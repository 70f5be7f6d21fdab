"""A reminder is posted exactly once when the cluster sending it is killed, or its send outlives its lease.

Two real cluster processes (``python -m shard``, one shard each) share a real PostgreSQL and Redis
and a simulator. The reminder's send is held by a simulator latency fault on its channel's
``POST /channels/{id}/messages`` (listed by ``GET /_sim/faults`` under ``held`` while it waits),
so each test acts at a known point without sleeping: the reminder is claimed (``claimed_by`` names
the claiming process by its pid) and the send is in flight or not. Then:

* killed between the claim and the send (the held request is dropped, ``if_client_gone: drop``:
  nothing reached Discord): the other cluster claims it after the lease and posts it;
* killed while the send is in flight (the simulator completes it after the delay): the other
  cluster finds it by its marker and only marks it delivered; or, when the send lands only after
  the other cluster's own send, Discord's nonce check (``enforce_nonce``) keeps it to one message;
* a send that outlives its lease in a live process keeps its claim (lengthened while in flight);
  and when the claimer cannot lengthen it (its database connection is cut), the other cluster
  claims and sends, and the late first send returns the same message (nonce).

Each asserts exactly one message with the reminder's marker in the channel, and the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db import reminders as db_reminders
from db.crypto import KeyRing
from db.pool import Database
from tests.e2e.commands import World, channel_messages, content_of, load_world, prefix, slash
from tests.procs import Proc, SimulatorProc, cluster_env, http_json, start_cluster, start_simulator
from tests.support import PgProxy, wait_for

pytestmark = pytest.mark.e2e

LEASE = 2.0  # INNKEEPER_REMINDER_LEASE for these clusters: short, so a dead claim ends soon
KEYS = KeyRing.parse(["dev"], allow_dev=True)
_CLAIMER = re.compile(r"^cluster-(\d+)-(\d+)-")


@pytest.fixture
def small_sim(tmp_path: Path) -> Iterator[SimulatorProc]:
    with start_simulator(tmp_path / "logs", guilds=4, shards=2, identify_window=0.2,
                         extra_args=("--message-limit", "100")) as proc:
        yield proc


@dataclass
class Clusters:
    sim: SimulatorProc
    dsn: str
    world: World
    procs: list[Proc]
    proxies: list[PgProxy]

    def by_claimer(self, claimed_by: str) -> int:
        """Which of the clusters holds a claim (the claimer names the process's pid)."""
        found = _CLAIMER.match(claimed_by)
        assert found is not None, claimed_by
        pids = [p.pid for p in self.procs]
        assert int(found[2]) in pids, (claimed_by, pids)
        return pids.index(int(found[2]))


async def _answers(sim: SimulatorProc, world: World, proc: Proc) -> bool:
    assert proc.alive(), proc.output()
    try:
        reply = await slash(sim, world, world.members[0], "ping", timeout=2)
    except AssertionError:
        return False
    return content_of(reply).startswith("Pong!")


@contextlib.asynccontextmanager
async def two_clusters(tmp_path: Path, sim: SimulatorProc, dsn: str, redis_url: str, redis_prefix: str, *,
                       proxied: bool = False) -> AsyncIterator[Clusters]:
    """Clusters 0 and 1 (shard 0 and shard 1 of 2), both READY; each through its own PgProxy if ``proxied``."""
    proxies = [PgProxy(dsn) for _ in range(2)] if proxied else []
    for proxy in proxies:
        await proxy.start()
    procs: list[Proc] = []
    try:
        guilds = sim.world(limit=4)["guilds"]
        worlds = [await load_world(sim, next(i for i, g in enumerate(guilds) if g["shard_id"] == shard))
                  for shard in (0, 1)]
        for cluster in (0, 1):
            env = cluster_env(sim, redis_prefix, redis_url=redis_url,
                              database_url=proxies[cluster].url if proxied else dsn,
                              extra={"INNKEEPER_ENCRYPTION_KEYS": "dev", "INNKEEPER_REMINDER_LEASE": str(LEASE)})
            procs.append(start_cluster(tmp_path / "logs", env, cluster=cluster, shard_ids=str(cluster), shard_count=2))
        for world, proc in zip(worlds, procs, strict=True):
            await wait_for(lambda w=world, p=proc: _answers(sim, w, p), timeout=60, interval=0.5,  # type: ignore[misc]
                           message="each cluster answering")
        # The channel's message bucket becomes known to the shared rate limiter (Redis): a first send to a
        # bucket of unknown limit is a probe the other cluster's sends wait for, which would order the sends.
        assert (await prefix(sim, worlds[0], worlds[0].members[0], "!ping"))["content"].startswith("Pong!")
        yield Clusters(sim, dsn, worlds[0], procs, proxies)
    finally:
        for proc in procs:
            proc.stop(signal.SIGKILL)
        for proxy in proxies:
            await proxy.stop()
            proxy.reserved.close()


async def control(sim: SimulatorProc, method: str, path: str, body: Any = None) -> Any:
    status, answer = await asyncio.to_thread(http_json, method, f"{sim.url}/_sim/{path}", body)
    assert status == 200, (path, answer)
    return answer


async def stats(sim: SimulatorProc) -> dict[str, Any]:
    return await asyncio.to_thread(sim.stats)


async def hold_sends(sim: SimulatorProc, channel_id: str, ms: int, if_client_gone: str) -> str:
    """Hold the next message send in ``channel_id`` for ``ms``; returns the held path to wait on."""
    await control(sim, "POST", "faults", {"kind": "latency", "ms": ms, "route": f"POST /channels/{channel_id}/messages",
                                          "count": 1, "if_client_gone": if_client_gone})
    return f"/api/v10/channels/{channel_id}/messages"


async def held(sim: SimulatorProc, path: str) -> bool:
    return any(h["path"] == path for h in (await control(sim, "GET", "faults"))["held"])


async def deliveries(sim: SimulatorProc, world: World, reminder_id: int) -> list[dict[str, Any]]:
    marker = f"reminder #{reminder_id}"
    return [m for m in await channel_messages(sim, world.channel_id, limit=100)
            if m["author"].get("bot") and m["content"].endswith(marker)]


async def reminder_row(dsn: str, reminder_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchrow("SELECT claimed_by, claimed_until, attempts, delivered_at, failed_at, "
                                    "now() AS db_now FROM reminders WHERE id = $1", reminder_id)
        assert found is not None
        return found
    finally:
        await conn.close()


async def due_now(c: Clusters) -> int:
    async with Database(c.dsn) as db:
        made = await db_reminders.create_reminder(db, KEYS, user_id=int(c.world.members[0]), body="exactly once",
                                                  due_at=dt.datetime.now(dt.UTC), guild_id=int(c.world.guild_id),
                                                  channel_id=int(c.world.channel_id))
    return made.id


async def claimed_and_held(c: Clusters, rid: int, path: str) -> tuple[int, asyncpg.Record]:
    """Wait until the reminder's send is held in the simulator; (the claiming cluster, its row)."""
    await wait_for(lambda: held(c.sim, path), timeout=30, interval=0.1, message="the reminder's send held")
    row = await reminder_row(c.dsn, rid)
    assert row["claimed_by"] and row["delivered_at"] is None and row["attempts"] == 1, dict(row)
    return c.by_claimer(row["claimed_by"]), row


async def delivered(c: Clusters, rid: int) -> asyncpg.Record:
    async def done() -> asyncpg.Record | None:
        row = await reminder_row(c.dsn, rid)
        assert row["failed_at"] is None, dict(row)
        return row if row["delivered_at"] is not None else None
    row: asyncpg.Record = await wait_for(done, timeout=40, interval=0.2, message="the reminder marked delivered")
    return row


async def test_killed_between_the_claim_and_the_send(tmp_path: Path, small_sim: SimulatorProc, migrated_db: str,
                                                     redis_url: str, redis_prefix: str) -> None:
    async with two_clusters(tmp_path, small_sim, migrated_db, redis_url, redis_prefix) as c:
        path = await hold_sends(c.sim, c.world.channel_id, 60_000, "drop")  # never reaches "Discord"
        rid = await due_now(c)
        claimer, _ = await claimed_and_held(c, rid, path)
        c.procs[claimer].stop(signal.SIGKILL)
        await wait_for(lambda: _dropped(c.sim), timeout=10, message="the held send dropped with its client")
        assert await deliveries(c.sim, c.world, rid) == []  # the send never went out
        row = await delivered(c, rid)
        assert c.by_claimer(row["claimed_by"]) == 1 - claimer and row["attempts"] == 2
        assert len(await deliveries(c.sim, c.world, rid)) == 1
        assert (await stats(c.sim))["nonce_duplicates"] == 0


async def _dropped(sim: SimulatorProc) -> bool:
    return bool((await stats(sim))["dropped_requests"] == 1)


async def test_killed_while_the_send_is_in_flight(tmp_path: Path, small_sim: SimulatorProc, migrated_db: str,
                                                  redis_url: str, redis_prefix: str) -> None:
    async with two_clusters(tmp_path, small_sim, migrated_db, redis_url, redis_prefix) as c:
        path = await hold_sends(c.sim, c.world.channel_id, 1000, "complete")  # lands within the lease
        rid = await due_now(c)
        claimer, _ = await claimed_and_held(c, rid, path)
        c.procs[claimer].stop(signal.SIGKILL)
        (landed,) = await wait_for(lambda: deliveries(c.sim, c.world, rid), timeout=10,
                                   message="the in-flight send landing after its sender died")
        assert (await reminder_row(c.dsn, rid))["attempts"] == 1  # before anyone else claimed it
        row = await delivered(c, rid)
        # the survivor claimed it after the lease, found it by its marker, and only marked it
        assert c.by_claimer(row["claimed_by"]) == 1 - claimer and row["attempts"] == 2
        assert [m["id"] for m in await deliveries(c.sim, c.world, rid)] == [landed["id"]]
        assert (await stats(c.sim))["nonce_duplicates"] == 0


async def test_killed_while_a_send_slower_than_the_lease_is_in_flight(
        tmp_path: Path, small_sim: SimulatorProc, migrated_db: str, redis_url: str, redis_prefix: str) -> None:
    """The dead cluster's send lands after the survivor posted: Discord's nonce check returns the survivor's."""
    async with two_clusters(tmp_path, small_sim, migrated_db, redis_url, redis_prefix) as c:
        path = await hold_sends(c.sim, c.world.channel_id, int(LEASE * 4 * 1000), "complete")
        rid = await due_now(c)
        claimer, _ = await claimed_and_held(c, rid, path)
        c.procs[claimer].stop(signal.SIGKILL)
        row = await delivered(c, rid)
        assert c.by_claimer(row["claimed_by"]) == 1 - claimer and row["attempts"] == 2
        assert await held(c.sim, path)  # the survivor posted while the first send was still held ...
        await wait_for(lambda: _not_held(c.sim, path), timeout=20, message="the first send completing")
        assert len(await deliveries(c.sim, c.world, rid)) == 1  # ... which then created nothing
        assert (await stats(c.sim))["nonce_duplicates"] == 1


async def _not_held(sim: SimulatorProc, path: str) -> bool:
    return not await held(sim, path)


async def test_a_send_that_outlives_its_lease_keeps_its_claim(tmp_path: Path, small_sim: SimulatorProc,
                                                              migrated_db: str, redis_url: str,
                                                              redis_prefix: str) -> None:
    async with two_clusters(tmp_path, small_sim, migrated_db, redis_url, redis_prefix) as c:
        path = await hold_sends(c.sim, c.world.channel_id, int(LEASE * 3.5 * 1000), "complete")
        rid = await due_now(c)
        claimer, first = await claimed_and_held(c, rid, path)

        async def past_the_first_lease() -> bool:
            row = await reminder_row(c.dsn, rid)
            if row["delivered_at"] is not None:
                raise AssertionError(f"delivered before the first lease ended: {dict(row)}")
            # the other cluster never took it: the claim is the same one, lengthened
            assert row["claimed_by"] == first["claimed_by"] and row["attempts"] == 1, dict(row)
            return bool(row["db_now"] > first["claimed_until"] + dt.timedelta(seconds=LEASE))

        await wait_for(past_the_first_lease, timeout=20, interval=0.2, message="twice the first lease to pass")
        assert await held(c.sim, path)  # the send is still in flight
        row = await delivered(c, rid)
        assert row["claimed_by"] == first["claimed_by"] and row["attempts"] == 1
        assert c.procs[claimer].alive()
        assert len(await deliveries(c.sim, c.world, rid)) == 1
        assert (await stats(c.sim))["nonce_duplicates"] == 0


async def test_a_send_that_outlives_a_claim_it_cannot_keep_posts_once(
        tmp_path: Path, small_sim: SimulatorProc, migrated_db: str, redis_url: str, redis_prefix: str) -> None:
    """The claimer's database connection is cut while its send is held: its claim runs out and the other
    cluster claims the reminder and posts it; the late first send then returns that message (nonce)."""
    async with two_clusters(tmp_path, small_sim, migrated_db, redis_url, redis_prefix, proxied=True) as c:
        path = await hold_sends(c.sim, c.world.channel_id, int(LEASE * 5 * 1000), "complete")
        rid = await due_now(c)
        claimer, _ = await claimed_and_held(c, rid, path)
        await c.proxies[claimer].stop()  # it can no longer lengthen its claim (nor mark anything)
        row = await delivered(c, rid)
        assert c.by_claimer(row["claimed_by"]) == 1 - claimer and row["attempts"] == 2
        assert await held(c.sim, path)  # the first send is still in flight
        await wait_for(lambda: _not_held(c.sim, path), timeout=30, message="the first send completing")
        assert c.procs[claimer].alive()
        assert len(await deliveries(c.sim, c.world, rid)) == 1
        assert (await stats(c.sim))["nonce_duplicates"] == 1
        final = await reminder_row(c.dsn, rid)
        assert final["claimed_by"] == row["claimed_by"] and final["delivered_at"] == row["delivered_at"]
