"""Cluster heartbeats: one msgpack record per cluster in Redis, expiring by TTL.

Each cluster process writes its record every ``INNKEEPER_HEARTBEAT_INTERVAL`` seconds (and soon
after any shard changes state) with a TTL of ``INNKEEPER_HEARTBEAT_TTL``. A record that is gone
means the cluster is down or hung. The status service, the launcher and ``innkeeper status`` read
them with :func:`read_heartbeats`; a malformed record is logged and skipped, never fatal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Literal, NotRequired, TypedDict

import msgpack

from innkeeper.errors import ErrorCode, IPCError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = (
    "HEARTBEAT_VERSION", "SHARD_STATES", "CLUSTER_STATES", "ShardState", "ShardBeat", "ClusterBeat", "CommandLoad",
    "encode_heartbeat", "decode_heartbeat", "write_heartbeat", "read_heartbeats", "delete_heartbeat",
)

_log = logging.getLogger(__name__)

HEARTBEAT_VERSION: Final = 1

ShardState = Literal["CONNECTING", "IDENTIFYING", "READY", "RESUMING", "DISCONNECTED"]
#: Every state a shard can report, in the order a cold start goes through them.
SHARD_STATES: Final[tuple[str, ...]] = ("CONNECTING", "IDENTIFYING", "READY", "RESUMING", "DISCONNECTED")
#: Cluster states: STARTING until every shard was READY once; DEGRADED when one is not READY since;
#: BLOCKED when the identify budget guard holds identifies back; STOPPING during shutdown.
CLUSTER_STATES: Final[tuple[str, ...]] = ("STARTING", "READY", "DEGRADED", "BLOCKED", "STOPPING")


class ShardBeat(TypedDict):
    id: int
    state: str
    latency_ms: float | None
    guilds: int
    last_event_age_s: float | None
    #: Unix time of the last IDENTIFY and the last READY (or RESUMED), when there was one.
    identified_at: float | None
    ready_at: float | None
    identifies: int
    resumes: int
    reconnects: int


class CommandLoad(TypedDict):
    """The cluster's commands now (running, waiting) and since it started (deferred, shed)."""

    running: int
    queued: int
    max_running: int
    max_queued: int
    deferred: int
    shed: int


class ClusterBeat(TypedDict):
    v: int
    cluster_id: int
    host: str
    pid: int
    #: Unix times: process start and this record.
    started_at: float
    written_at: float
    state: str
    rss_bytes: int
    events_per_s: float
    metrics_port: int | None
    identify_blocked_reason: str | None
    shards: list[ShardBeat]
    #: Written by clusters that run commands (absent from older records).
    commands: NotRequired[CommandLoad]
    #: The cluster's circuit breakers: dependency → ``closed``, ``half-open`` or ``open`` (absent
    #: in records of older clusters).
    breakers: NotRequired[dict[str, str]]
    #: The process's generation of clusters (``ipc/generations.py``; absent in older records: 0).
    generation: NotRequired[int]
    #: What it handles while a reshard runs two generations: ``all``, ``none``, ``before <T>``, ``from <T>``.
    handles: NotRequired[str]


_SHARD_FIELDS: Final = {
    "id": (int,), "state": (str,), "latency_ms": (int, float, type(None)), "guilds": (int,),
    "last_event_age_s": (int, float, type(None)), "identified_at": (int, float, type(None)),
    "ready_at": (int, float, type(None)), "identifies": (int,), "resumes": (int,), "reconnects": (int,),
}
_COMMAND_FIELDS: Final[dict[str, tuple[type, ...]]] = {name: (int,) for name in CommandLoad.__annotations__}
_CLUSTER_FIELDS: Final = {
    "v": (int,), "cluster_id": (int,), "host": (str,), "pid": (int,), "started_at": (int, float),
    "written_at": (int, float), "state": (str,), "rss_bytes": (int,), "events_per_s": (int, float),
    "metrics_port": (int, type(None)), "identify_blocked_reason": (str, type(None)), "shards": (list,),
}


def encode_heartbeat(beat: ClusterBeat) -> bytes:
    """Pack a heartbeat record."""
    packed: bytes = msgpack.packb(beat, use_bin_type=True)
    return packed


def _check(obj: Any, fields: dict[str, tuple[type, ...]], what: str) -> None:
    if not isinstance(obj, dict):
        raise IPCError(f"{what} is not a map", code=ErrorCode.IPC_DECODE)
    for name, types in fields.items():
        if name not in obj:
            raise IPCError(f"{what} lacks {name!r}", code=ErrorCode.IPC_DECODE)
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise IPCError(f"{what} field {name!r} has type {type(value).__name__}", code=ErrorCode.IPC_DECODE)


def decode_heartbeat(raw: bytes | str) -> ClusterBeat:
    """Unpack and validate a heartbeat record.

    Raises
    ------
    IPCError
        ``IPC_DECODE`` when the bytes are not a heartbeat of a known version.
    """
    try:
        obj = msgpack.unpackb(raw.encode() if isinstance(raw, str) else raw, raw=False)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types
        raise IPCError(f"heartbeat is not msgpack: {exc}", code=ErrorCode.IPC_DECODE) from None
    _check(obj, _CLUSTER_FIELDS, "heartbeat")
    if obj["v"] != HEARTBEAT_VERSION:
        raise IPCError(f"heartbeat version {obj['v']} is not {HEARTBEAT_VERSION}", code=ErrorCode.IPC_DECODE)
    for shard in obj["shards"]:
        _check(shard, _SHARD_FIELDS, "heartbeat shard")
    if "commands" in obj:
        _check(obj["commands"], _COMMAND_FIELDS, "heartbeat commands")
    breakers = obj.get("breakers")
    if breakers is not None and not (isinstance(breakers, dict)
                                     and all(isinstance(k, str) and isinstance(v, str) for k, v in breakers.items())):
        raise IPCError("heartbeat field 'breakers' is not a map of strings", code=ErrorCode.IPC_DECODE)
    if "generation" in obj and (isinstance(obj["generation"], bool) or not isinstance(obj["generation"], int)):
        raise IPCError("heartbeat field 'generation' is not an integer", code=ErrorCode.IPC_DECODE)
    if "handles" in obj and not isinstance(obj["handles"], str):
        raise IPCError("heartbeat field 'handles' is not a string", code=ErrorCode.IPC_DECODE)
    result: ClusterBeat = obj
    return result


async def write_heartbeat(redis: aioredis.Redis, keys: Keys, beat: ClusterBeat, ttl_s: float) -> None:
    """Store ``beat`` under the cluster's key for ``ttl_s`` seconds."""
    await redis.set(keys.heartbeat(beat["cluster_id"]), encode_heartbeat(beat), px=max(1, round(ttl_s * 1000)))


async def delete_heartbeat(redis: aioredis.Redis, keys: Keys, cluster_id: int) -> None:
    await redis.delete(keys.heartbeat(cluster_id))


async def read_heartbeats(
    redis: aioredis.Redis, keys: Keys, cluster_ids: Iterable[int] | None = None
) -> dict[int, ClusterBeat]:
    """Every live heartbeat (or those of ``cluster_ids``), by cluster id; malformed ones are skipped."""
    if cluster_ids is None:
        names = [k async for k in redis.scan_iter(match=keys.heartbeat_pattern(), count=500)]
    else:
        names = [keys.heartbeat(c) for c in cluster_ids]
    if not names:
        return {}
    out: dict[int, ClusterBeat] = {}
    for name, raw in zip(names, await redis.mget(names), strict=True):
        if raw is None:
            continue
        try:
            beat = decode_heartbeat(raw)
        except IPCError as exc:
            _log.warning("skipping heartbeat %r: %s", name, exc.message)
            continue
        out[beat["cluster_id"]] = beat
    return dict(sorted(out.items()))
