"""The cluster's state as ops see it: the plan and the heartbeats, turned into one status document.

:func:`build_status` is pure (plan + heartbeat records + now → the ``/status.json`` document of
``DESIGN.md``) and :func:`health` decides ``/healthz`` from it, so both are unit-tested from
fixtures. The status service, the launcher's progress line and ``innkeeper status`` all read
through :func:`read_status`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import msgpack

from ipc.gateway_advice import read_advice
from ipc.generations import GenerationState, read_generations
from ipc.heartbeat import ClusterBeat, CommandLoad, read_heartbeats

from .crash_policy import RESTARTING, STOPPED, CrashRecord, record_from_json
from .plan import Plan, format_shard_ids

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = ("store_plan", "load_plan", "build_status", "read_status", "health", "Health", "StatusDoc",
           "ClusterStatus", "ShardStatus", "GuardStatus", "progress_line", "DOWN", "STALE", "stale_after",
           "read_guard_records", "ReshardStatus", "reshard_status")

_log = logging.getLogger(__name__)

#: State of a shard or cluster that the plan expects but no heartbeat reports.
DOWN = "DOWN"
#: State of a cluster whose heartbeat has not been rewritten for too long.
STALE = "STALE"


def stale_after(heartbeat_interval_s: float) -> float:
    """How old a heartbeat may get before its cluster counts as STALE: two missed writes, plus a second."""
    return 2 * heartbeat_interval_s + 1.0


class ShardStatus(TypedDict):
    id: int
    state: str
    latency_ms: float | None
    guilds: int
    last_event_age_s: float | None


class GuardStatus(TypedDict):
    """The crash-loop guard's view of a cluster (``cluster/crash_guard.py``), while it has one."""

    #: ``restarting`` (a restart is due), ``stopped`` (past the cap: stays down), ``running`` (restarted).
    state: str
    reason: str
    #: Crashes within the window, and the cap.
    crashes: int
    max_crashes: int
    window_s: float
    #: Exit code of the last crash (-1: a signal).
    last_exit: int | None
    #: Seconds until the guard starts it again (``restarting`` only).
    restart_in_s: float | None
    #: Restarts the guard made.
    restarts: int


class ClusterStatus(TypedDict):
    id: int
    host: str | None
    pid: int | None
    state: str
    uptime_s: float | None
    rss_bytes: int | None
    events_per_s: float | None
    metrics_port: int | None
    identify_blocked_reason: str | None
    #: The cluster's command admission (running, queued, deferred, shed), when it reports one.
    commands: CommandLoad | None
    shards: list[ShardStatus]
    #: Circuit breakers that are not closed: dependency → ``half-open`` or ``open``.
    breakers: dict[str, str]
    #: The crash-loop guard's record, when the cluster crashed within the guard's window.
    crash_guard: GuardStatus | None
    #: The cluster's generation (a reshard runs two side by side), and what it handles now:
    #: ``all``, ``none``, ``before <T>`` or ``from <T>`` (T in Unix ms), None when it does not say.
    generation: int | None
    handles: str | None


class ReshardStatus(TypedDict):
    """A zero-downtime reshard in progress: the generations, shard counts, phase and switch instant."""

    from_generation: int
    to_generation: int
    from_shards: int | None
    to_shards: int | None
    #: ``starting`` (the new generation identifies), ``switching``, ``draining`` (the old one finishes
    #: its commands), ``done``.
    phase: str
    #: Unix time of the switch, once set.
    switch_at: float | None


class StatusDoc(TypedDict):
    clusters: list[ClusterStatus]
    shard_count: int | None
    max_concurrency: int | None
    #: The reshard in progress, only while one runs (both generations' clusters are then in ``clusters``).
    reshard: NotRequired[ReshardStatus]
    #: The auto-reshard helper's last check of ``GET /gateway/bot`` (``ipc.gateway_advice.GatewayAdvice``:
    #: ``recommended``, ``running``, ``target``, ``action``, ``enabled``, ``checked_at``, ``detail``), once it made one.
    auto_reshard: NotRequired[dict[str, Any]]


# --- the plan in Redis -----------------------------------------------------------------------------
async def store_plan(redis: aioredis.Redis, keys: Keys, plan: Plan) -> None:
    """Store the plan the launcher applied (no TTL: it stays the expectation until replaced)."""
    await redis.set(keys.plan(), msgpack.packb(plan.as_dict(), use_bin_type=True))


async def load_plan(redis: aioredis.Redis, keys: Keys) -> Plan | None:
    """The stored plan, or None when there is none (or it is malformed, which is logged)."""
    raw = await redis.get(keys.plan())
    return _decode_plan(raw.encode() if isinstance(raw, str) else raw)


# --- the status document ---------------------------------------------------------------------------
def _shard(beat_shard: Mapping[str, Any]) -> ShardStatus:
    return {"id": int(beat_shard["id"]), "state": str(beat_shard["state"]), "latency_ms": beat_shard["latency_ms"],
            "guilds": int(beat_shard["guilds"]), "last_event_age_s": beat_shard["last_event_age_s"]}


def _down_shard(shard_id: int) -> ShardStatus:
    return {"id": shard_id, "state": DOWN, "latency_ms": None, "guilds": 0, "last_event_age_s": None}


def _cluster(cluster_id: int, beat: ClusterBeat | None, expected: tuple[int, ...] | None, now: float,
             stale_after_s: float | None, generation: int | None = None) -> ClusterStatus:
    status = _cluster_state(cluster_id, beat, expected, now, stale_after_s)
    status["generation"] = beat.get("generation", 0) if beat is not None else generation
    status["handles"] = beat.get("handles") if beat is not None and status["state"] != STALE else None
    return status


def _cluster_state(cluster_id: int, beat: ClusterBeat | None, expected: tuple[int, ...] | None, now: float,
                   stale_after_s: float | None) -> ClusterStatus:
    if beat is not None and stale_after_s is not None and now - beat["written_at"] > stale_after_s:
        # The process stopped writing (killed, hung): its last record says nothing about now.
        ids = expected if expected is not None else tuple(s["id"] for s in beat["shards"])
        return {"id": cluster_id, "host": beat["host"], "pid": beat["pid"], "state": STALE, "uptime_s": None,
                "rss_bytes": None, "events_per_s": None, "metrics_port": None,
                "identify_blocked_reason": None, "commands": None, "shards": [_down_shard(s) for s in ids],
                "breakers": {}, "crash_guard": None, "generation": None, "handles": None}
    if beat is None:
        return {"id": cluster_id, "host": None, "pid": None, "state": DOWN, "uptime_s": None, "rss_bytes": None,
                "events_per_s": None, "metrics_port": None, "identify_blocked_reason": None, "commands": None,
                "shards": [_down_shard(s) for s in expected or ()], "breakers": {}, "crash_guard": None,
                "generation": None, "handles": None}
    reported = {s["id"]: _shard(s) for s in beat["shards"]}
    ids = tuple(expected) if expected is not None else tuple(sorted(reported))
    shards = [reported.get(sid) or _down_shard(sid) for sid in ids]
    return {"id": cluster_id, "host": beat["host"], "pid": beat["pid"], "state": beat["state"],
            "uptime_s": round(max(0.0, now - beat["started_at"]), 1), "rss_bytes": beat["rss_bytes"],
            "events_per_s": beat["events_per_s"], "metrics_port": beat["metrics_port"],
            "identify_blocked_reason": beat["identify_blocked_reason"], "commands": beat.get("commands"),
            "shards": shards, "breakers": {k: v for k, v in beat.get("breakers", {}).items() if v != "closed"},
            "crash_guard": None, "generation": None, "handles": None}


def _guard(record: CrashRecord, now: float) -> GuardStatus:
    at = record["restart_at"]
    return {"state": record["state"], "reason": record["reason"], "crashes": len(record["crashes"]),
            "max_crashes": record["max_crashes"], "window_s": record["window_s"], "last_exit": record["last_exit"],
            "restart_in_s": None if at is None or record["state"] != RESTARTING else round(max(0.0, at - now), 1),
            "restarts": record["restarts"]}


def build_status(plan: Plan | None, beats: Mapping[int, ClusterBeat], now: float | None = None, *,
                 stale_after_s: float | None = None, guards: Mapping[int, CrashRecord] | None = None,
                 other: Plan | None = None, reshard: ReshardStatus | None = None) -> StatusDoc:
    """The ``/status.json`` document.

    Clusters the plan expects but that have no heartbeat are ``DOWN`` with every shard ``DOWN``;
    a heartbeat older than ``stale_after_s`` makes its cluster ``STALE`` (shards ``DOWN``): the
    process stopped writing before its record expired. During a reshard the other generation's
    clusters (``other``) follow; heartbeats of clusters outside both (a straggler) are listed last.
    """
    now = time.time() if now is None else now
    clusters: list[ClusterStatus] = []
    seen: set[int] = set()
    for p in (plan, other):
        if p is None:
            continue
        for spec in p.clusters:
            if spec.id in seen:
                continue
            clusters.append(_cluster(spec.id, beats.get(spec.id), spec.shard_ids, now, stale_after_s, p.generation))
            seen.add(spec.id)
    for cid in sorted(beats):
        if cid not in seen:
            clusters.append(_cluster(cid, beats[cid], None, now, stale_after_s))
    for i, cluster in enumerate(clusters):
        record = (guards or {}).get(cluster["id"])
        if record is None:
            continue
        if record["state"] in (RESTARTING, STOPPED) and cluster["state"] != DOWN:
            # the guard saw this process die: a heartbeat it left is no news of a running cluster
            ids = tuple(s["id"] for s in cluster["shards"])
            cluster = clusters[i] = _cluster(cluster["id"], None, ids, now, stale_after_s, cluster["generation"])
        cluster["crash_guard"] = _guard(record, now)
    doc: StatusDoc = {"clusters": clusters, "shard_count": plan.shard_count if plan else None,
                      "max_concurrency": plan.max_concurrency if plan else None}
    if reshard is not None:
        doc["reshard"] = reshard
    return doc


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    ready: int
    expected: int
    #: One line per problem, e.g. ``cluster-2 DOWN (shards 8-11)`` or ``shard 9 IDENTIFYING (cluster-2)``.
    problems: tuple[str, ...]


def health(doc: StatusDoc, plan: Plan | None) -> Health:
    """Healthy when every shard the plan expects is READY in its cluster's heartbeat."""
    if plan is None:
        return Health(False, 0, 0, ("no plan in Redis: has `innkeeper launch` run with this prefix?",))
    problems: list[str] = []
    ready = 0
    expected_ids = {spec.id for spec in plan.clusters}
    for cluster in doc["clusters"]:
        if cluster["id"] not in expected_ids:
            continue
        guard = cluster["crash_guard"]
        if cluster["state"] in (DOWN, STALE):
            ids = tuple(s["id"] for s in cluster["shards"])
            what = "DOWN" if cluster["state"] == DOWN else f"STALE (pid {cluster['pid']} stopped writing heartbeats)"
            why = f": {guard['reason']}" if guard and guard["state"] in (RESTARTING, STOPPED) else ""
            problems.append(f"cluster-{cluster['id']} {what} (shards {format_shard_ids(ids)}){why}")
            continue
        if cluster["identify_blocked_reason"]:
            problems.append(f"cluster-{cluster['id']}: {cluster['identify_blocked_reason']}")
        for shard in cluster["shards"]:
            if shard["state"] == "READY":
                ready += 1
            else:
                problems.append(f"shard {shard['id']} {shard['state']} (cluster-{cluster['id']})")
    return Health(ready == plan.shard_count and not problems, ready, plan.shard_count, tuple(problems))


def _decode_plan(raw: bytes | None) -> Plan | None:
    if raw is None:
        return None
    try:
        return Plan.from_dict(msgpack.unpackb(raw, raw=False))
    except Exception as exc:  # noqa: BLE001 - msgpack and the plan raise several types
        _log.warning("ignoring a malformed plan in Redis: %s", exc)
        return None


def reshard_status(state: GenerationState | None, plan: Plan | None) -> tuple[ReshardStatus | None, Plan | None]:
    """The reshard in progress (None outside one) and the other generation's plan, from the generations record."""
    if state is None or state.phase == "done":
        return None, None
    other = _decode_plan(state.other_plan)
    switched = plan is not None and state.next is not None and plan.generation == state.next
    old, new = (other, plan) if switched else (plan, other)
    to_gen = state.next if state.next is not None else state.active
    from_gen = old.generation if old is not None else state.active
    return ({"from_generation": from_gen, "to_generation": to_gen,
             "from_shards": old.shard_count if old else None, "to_shards": new.shard_count if new else None,
             "phase": state.phase,
             "switch_at": None if state.switch_at_ms is None else state.switch_at_ms / 1000}, other)


async def read_status(redis: aioredis.Redis, keys: Keys, *, stale_after_s: float | None = None
                      ) -> tuple[Plan | None, StatusDoc]:
    """Read the plan, the generations record and every heartbeat from Redis and build the status document."""
    plan = await load_plan(redis, keys)
    beats = await read_heartbeats(redis, keys)
    guards = await read_guard_records(redis, keys)
    reshard, other = reshard_status(await read_generations(redis, keys), plan)
    doc = build_status(plan, beats, stale_after_s=stale_after_s, guards=guards, other=other, reshard=reshard)
    advice = await read_advice(redis, keys)
    if advice is not None:
        doc["auto_reshard"] = advice.as_dict()
    return plan, doc


async def read_guard_records(redis: aioredis.Redis, keys: Keys) -> dict[int, CrashRecord]:
    """The crash-loop guard's records by cluster id (malformed ones are skipped)."""
    found = [key async for key in redis.scan_iter(match=keys.crash_guard_pattern(), count=200)]
    if not found:
        return {}
    out: dict[int, CrashRecord] = {}
    for raw in await redis.mget(found):
        try:
            record = record_from_json(json.loads(raw)) if raw else None
        except ValueError:
            record = None
        if record is not None:
            out[record["cluster"]] = record
    return out


def progress_line(doc: StatusDoc, h: Health) -> str:
    """``12/16 shards READY (cluster-2 identifying shard 9)``: what the launcher prints while waiting."""
    line = f"{h.ready}/{h.expected} shards READY"
    doing: list[str] = []
    for cluster in doc["clusters"]:
        if cluster["identify_blocked_reason"]:
            doing.append(f"cluster-{cluster['id']} {cluster['identify_blocked_reason']}")
            continue
        guard = cluster["crash_guard"]
        if cluster["state"] in (DOWN, STALE) and guard and guard["state"] in (RESTARTING, STOPPED):
            doing.append(f"cluster-{cluster['id']} {guard['reason']}")
            continue
        if cluster["state"] in (DOWN, STALE):
            doing.append(f"cluster-{cluster['id']} starting")
            continue
        identifying = [s["id"] for s in cluster["shards"] if s["state"] == "IDENTIFYING"]
        if identifying:
            doing.append(f"cluster-{cluster['id']} identifying shard {format_shard_ids(identifying)}")
    if doing:
        shown = ", ".join(doing[:3]) + (f", +{len(doing) - 3} more" if len(doing) > 3 else "")
        line += f" ({shown})"
    return line
