"""``innkeeper reshard``: a new shard count without downtime.

1. **Budget.** ``GET /gateway/bot`` says how many identifies are left today; the new generation
   identifies every one of its ``S`` shards, so ``remaining - INNKEEPER_IDENTIFY_RESERVE`` must
   cover ``S`` (:func:`check_budget`), or nothing changes (``E2003``).
2. **Beside.** The new plan is generation ``g+1``: its clusters are numbered apart from the
   running ones (``cluster.plan.next_first_id``), rendered to their own program file
   (``run/clusters-g<N>.conf``, group ``clusters-g<N>``) and added to supervisord, which leaves the
   running group alone. They identify through the same shared queue. The generations record
   (:mod:`ipc.generations`) says the new generation is ``next``: its clusters handle no command and
   run no background work yet (:mod:`shard.handover`); they do not resume the old one's sessions.
3. **Switch.** Once every new shard is READY and every process of both generations acknowledged
   the reshard, the launcher sets the switch instant ``T`` a little ahead (:data:`LEAD_S`) and
   checks that every process acknowledged ``T`` before it came (a late one is reported; ``T``
   never moves). From ``T`` on, commands created before ``T`` belong to the old generation and the
   others to the new one: nothing twice, nothing dropped. The plan in Redis becomes the new one.
4. **Drain and stop.** The old generation finishes the commands it took (its heartbeats say when
   none runs or waits), then its group is removed from supervisord. Its processes no longer handle
   events, so they neither save nor park their sessions: closing, discord.py ends them (1000).

A failure before the switch (a shard that never gets READY, a process that never acknowledges the
reshard) removes the new generation again and leaves the old one as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from innkeeper.errors import ErrorCode, InnkeeperError
from ipc.generations import GenerationState, clear_acks, read_acks, read_generations, write_generations
from ipc.heartbeat import read_heartbeats

from .launcher import GatewayInfo, Launcher, fetch_gateway
from .plan import Plan, format_shard_ids, next_first_id

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ("Resharder", "check_budget", "LEAD_S")

_log = logging.getLogger(__name__)

#: How far ahead of now the switch instant is set: every process polls the record every 0.1 s
#: during a reshard and must apply ``T`` before it comes.
LEAD_S = 2.0
#: How long after ``T`` a process may still acknowledge it before the launcher stops waiting.
LATE_ACK_S = 15.0
#: After ``T``, events created just before it may still be on their way to the old generation.
LATE_EVENTS_S = 1.0
#: One reshard at a time: the lock expires by itself after this long (a launcher that died).
LOCK_TTL_S = 3600


def check_budget(session_start_limit: Mapping[str, Any], need: int, reserve: int) -> int:
    """Check that the identify budget covers ``need`` identifies above ``reserve``; returns what is left after.

    Raises
    ------
    InnkeeperError
        ``IDENTIFY_BUDGET`` with the numbers, when it does not.
    """
    try:
        remaining = int(session_start_limit["remaining"])
        total = int(session_start_limit.get("total", remaining))
        reset_h = int(session_start_limit.get("reset_after", 0)) / 3_600_000
    except (KeyError, TypeError, ValueError):
        raise InnkeeperError("GET /gateway/bot gave no usable session_start_limit: cannot check the identify budget",
                             code=ErrorCode.IDENTIFY_BUDGET) from None
    if remaining - reserve < need:
        raise InnkeeperError(
            f"the identify budget has {remaining} of {total} identifies left (it resets in {reset_h:.1f} h) and "
            f"keeps {reserve} in reserve (INNKEEPER_IDENTIFY_RESERVE): resharding to {need} shards needs {need} "
            "identifies; nothing was changed", code=ErrorCode.IDENTIFY_BUDGET,
            remaining=remaining, total=total, reserve=reserve, need=need)
    return remaining - need


def _pack(p: Plan) -> bytes:
    packed: bytes = msgpack.packb(p.as_dict(), use_bin_type=True)
    return packed


def _same_layout(a: Plan, b: Plan) -> bool:
    return a.shard_count == b.shard_count and a.max_concurrency == b.max_concurrency and \
        [c.shard_ids for c in a.clusters] == [c.shard_ids for c in b.clusters]


class Resharder:
    """Runs one reshard with a :class:`~cluster.launcher.Launcher` (see the module docstring)."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.keys = launcher.keys
        self.out = launcher.out

    async def run(self, *, shards: int | None = None, clusters: int | None = None) -> Plan:
        """Reshard to ``shards`` (Discord's recommendation by default) in ``clusters`` clusters.

        Raises
        ------
        InnkeeperError
            ``IDENTIFY_BUDGET`` when the budget is short, ``CLUSTER_UNHEALTHY`` when another reshard
            runs (``innkeeper reshard`` and the auto-reshard helper take turns) or this one failed.
        """
        launcher = self.launcher
        gateway = await fetch_gateway(launcher.settings)
        async with launcher.redis() as client, self._lock(client):
            return await self._run(gateway, client, shards=shards, clusters=clusters)

    @contextlib.asynccontextmanager
    async def _lock(self, client: aioredis.Redis) -> AsyncIterator[None]:
        token = uuid.uuid4().hex
        if not await client.set(self.keys.lock("reshard"), token, nx=True, ex=LOCK_TTL_S):
            raise InnkeeperError("another reshard is running (`innkeeper reshard`, or the auto-reshard helper): "
                                 "wait for it, `innkeeper status` shows its progress", code=ErrorCode.CLUSTER_UNHEALTHY)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                if await client.get(self.keys.lock("reshard")) == token.encode():
                    await client.delete(self.keys.lock("reshard"))

    async def _run(self, gateway: GatewayInfo, client: aioredis.Redis, *, shards: int | None,
                   clusters: int | None) -> Plan:
        launcher = self.launcher
        old = await launcher.current_plan(client)
        old = await self._recover(old, client)
        probe = launcher.make_plan(gateway, shards=shards, clusters=clusters, generation=old.generation)
        if _same_layout(old, probe):
            self.out(f"the plan is unchanged ({old.shard_count} shards in {len(old.clusters)} clusters)")
            return old
        if launcher.settings.hosts > 1:
            return await self._cold(gateway, old, probe, client)
        new = launcher.make_plan(gateway, shards=shards, clusters=clusters, generation=old.generation + 1,
                                 first_id=next_first_id(old, len(probe.clusters)))
        left = check_budget(gateway.session_start_limit, new.shard_count, launcher.settings.identify_reserve)
        started = time.monotonic()
        self.out(f"resharding without downtime: {old.shard_count} → {new.shard_count} shards, "
                 f"{len(old.clusters)} → {len(new.clusters)} clusters; generation {new.generation} ("
                 + ", ".join(f"{c.name} [{format_shard_ids(c.shard_ids)}]" for c in new.clusters)
                 + f") starts beside generation {old.generation}, spending {new.shard_count} identifies "
                 f"({left} left after); both run (and use memory) until the switch")
        await launcher._store_budget(gateway, new, client)
        await clear_acks(client, self.keys)
        await write_generations(client, self.keys, GenerationState(old.generation, new.generation, None,
                                                                   "starting", _pack(new)))
        try:
            await launcher.apply_plan(new, client, beside=old)
            await launcher.wait_ready(new, client)
            self.out(f"generation {new.generation}: all {new.shard_count} shards READY after "
                     f"{time.monotonic() - started:.1f} s; switching")
            switch_at_ms = await self._switch(old, new, client)
        except BaseException:
            await self._abandon(old, new, client)
            raise
        await self.launcher.store_plan(client, new)
        await write_generations(client, self.keys, GenerationState(old.generation, new.generation, switch_at_ms,
                                                                   "draining", _pack(old)))
        self.out(f"switched: generation {new.generation} handles every command created from "
                 f"{time.strftime('%H:%M:%S', time.localtime(switch_at_ms / 1000))}"
                 f".{switch_at_ms % 1000:03d}; generation {old.generation} finishes the ones it took")
        await self._drain(old, switch_at_ms, client)
        self.out(f"stopping generation {old.generation} (" + ", ".join(c.name for c in old.clusters) + ")")
        await launcher.apply_plan(new, client, mark_cold_start=False)
        await launcher.settle_generations(new, client)
        self.out(f"resharded {old.shard_count} → {new.shard_count} shards in {time.monotonic() - started:.1f} s "
                 "without downtime")
        return new

    # --- the steps ------------------------------------------------------------------------------
    def _processes(self, *plans: Plan) -> list[tuple[int, int]]:
        host = self.launcher.settings.host_index
        return [(p.generation, c.id) for p in plans for c in p.for_host(host)]

    async def _wait_acks(self, client: aioredis.Redis, procs: list[tuple[int, int]], value: str,
                         deadline: float) -> list[tuple[int, int]]:
        """Wait until every process acknowledged ``value`` or ``deadline`` (monotonic); returns the missing ones."""
        while True:
            acks = await read_acks(client, self.keys)
            missing = [p for p in procs if acks.get(p) != value]
            if not missing or time.monotonic() >= deadline:
                return missing
            await asyncio.sleep(0.05)

    async def _redis_ms(self, client: aioredis.Redis) -> int:
        sec, usec = await client.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def _switch(self, old: Plan, new: Plan, client: aioredis.Redis) -> int:
        """Set ``T`` once every process follows the reshard closely; returns ``T`` once it has passed.

        Every process normally acknowledges ``T`` well before it comes (they read the record every
        0.1 s). One that does not is reported (see :mod:`shard.handover` for what a late one does).
        """
        procs = self._processes(old, new)
        missing = await self._wait_acks(client, procs, f"{new.generation}:0", time.monotonic() + 15.0)
        if missing:
            raise InnkeeperError("these clusters did not acknowledge the reshard in 15 s: "
                                 + ", ".join(f"cluster-{cid} (generation {gen})" for gen, cid in missing),
                                 code=ErrorCode.CLUSTER_UNHEALTHY)
        # T is final once set: moving it would leave a process that saw the first one on the wrong side
        switch_at_ms = await self._redis_ms(client) + int(LEAD_S * 1000)
        await write_generations(client, self.keys, GenerationState(old.generation, new.generation, switch_at_ms,
                                                                   "switching", _pack(new)))
        value = f"{new.generation}:{switch_at_ms}"
        missing = await self._wait_acks(client, procs, value, time.monotonic() + LEAD_S)
        if missing:
            late = await self._wait_acks(client, missing, value, time.monotonic() + LATE_ACK_S)
            for gen, cid in missing:
                what = "never acknowledged it" if (gen, cid) in late else "acknowledged it late"
                risk = ("commands it received after the switch may have been answered twice"
                        if gen == old.generation else "it answers the commands it held back late")
                self.out(f"warning: cluster-{cid} (generation {gen}) {what}: {risk}")
        now = await self._redis_ms(client)
        await asyncio.sleep(max(0, switch_at_ms - now) / 1000 + 0.01)  # T, by Redis's clock
        return switch_at_ms

    async def _drain(self, old: Plan, switch_at_ms: int, client: aioredis.Redis) -> None:
        """Wait until the old generation has no command running or waiting (heartbeats written after ``T``)."""
        settings = self.launcher.settings
        await asyncio.sleep(LATE_EVENTS_S)
        since = switch_at_ms / 1000 + LATE_EVENTS_S
        ids = [c.id for c in old.for_host(settings.host_index)]
        deadline = time.monotonic() + settings.reply_timeout_s + 3 * settings.heartbeat_interval_s + 10.0
        busy: list[str] = []
        while time.monotonic() < deadline:
            beats = await read_heartbeats(client, self.keys, ids)
            busy = []
            for cid in ids:
                beat = beats.get(cid)
                if beat is None:
                    continue  # gone: nothing left to finish
                load = beat.get("commands")
                if beat["written_at"] < since or (load is not None and load["running"] + load["queued"] > 0):
                    busy.append(f"cluster-{cid}")
            if not busy:
                return
            await asyncio.sleep(0.1)
        self.out("warning: " + ", ".join(busy) + " still had commands running; stopping them anyway")

    async def _abandon(self, old: Plan, new: Plan, client: aioredis.Redis) -> None:
        """Before the switch: take the new generation out again; the old one handles everything as before."""
        self.out(f"reshard abandoned: removing generation {new.generation}; generation {old.generation} runs on")
        try:
            await write_generations(client, self.keys, GenerationState(old.generation))
            await self.launcher.apply_plan(old, client, mark_cold_start=False)
            await clear_acks(client, self.keys)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to report
            _log.error("could not remove generation %d: %s", new.generation, exc)
            self.out(f"warning: could not remove generation {new.generation} ({exc}); run `innkeeper reshard` again")

    async def _recover(self, current: Plan, client: aioredis.Redis) -> Plan:
        """An earlier reshard was interrupted: finish it (past the switch) or take it back (before)."""
        state = await read_generations(client, self.keys)
        if state is None or state.next is None:
            return current
        if state.switch_at_ms is not None and current.generation == state.next:
            self.out(f"an interrupted reshard had switched to generation {state.next}: stopping the old one")
            await self.launcher.apply_plan(current, client, mark_cold_start=False)
            await self.launcher.settle_generations(current, client)
            return current
        self.out(f"an interrupted reshard left generation {state.next} unswitched: removing it")
        await write_generations(client, self.keys, GenerationState(current.generation))
        await self.launcher.apply_plan(current, client, mark_cold_start=False)
        await clear_acks(client, self.keys)
        return current

    async def _cold(self, gateway: GatewayInfo, old: Plan, new: Plan, client: aioredis.Redis) -> Plan:
        """Several hosts: every cluster restarts on the new plan (one cold start)."""
        launcher = self.launcher
        self.out(f"resharding: {old.shard_count} → {new.shard_count} shards, {len(old.clusters)} → "
                 f"{len(new.clusters)} clusters. With {launcher.settings.hosts} hosts every shard reconnects and "
                 "identifies again: the bot is offline until the new clusters are READY.")
        await launcher._store_budget(gateway, new, client)
        await launcher.apply_plan(new, client)
        await launcher.wait_ready(new, client)
        return new

