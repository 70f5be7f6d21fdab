"""Generations of clusters in Redis: which one handles events, the one being brought up, and the switch.

A zero-downtime reshard (``cluster/reshard.py``) runs the next generation of clusters (the new shard
count) beside the active one until it is READY, then switches over at one instant ``T`` and stops the
old generation. Every cluster process knows its own generation (``python -m shard --generation``) and
reads this record (:class:`GenerationState`) to decide what it handles (``shard/handover.py``):

* no record, or ``active`` is its generation and there is no ``next``: everything (the normal case);
* its generation is ``next`` and ``switch_at_ms`` is unset: no command and no background work yet
  (its caches fill from the gateway as usual);
* once ``switch_at_ms`` (``T``, Unix ms) is set: the old generation handles the commands whose
  snowflake was created before ``T``, the new one those created at or after it. Both receive every
  event while they overlap, so each command is handled by exactly one of them.

Each process acknowledges what it applied in :meth:`Keys.generation_acks` (``"<next>:<T>"``), and
the launcher moves on only when every process of both generations has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = ("GenerationState", "read_generations", "write_generations", "ack_generation", "read_acks",
           "clear_acks", "ack_value")


@dataclass(frozen=True, slots=True)
class GenerationState:
    """The generations record.

    Attributes
    ----------
    active:
        The generation that handles events (before the switch), or the only one.
    next:
        The generation being brought up beside it, or None.
    switch_at_ms:
        The switch instant ``T`` (Unix ms), once the launcher set it.
    phase:
        What the reshard is doing, for status: ``starting``, ``switching``, ``draining`` or ``done``.
    other_plan:
        The other generation's plan (msgpack, as ``cluster/state.py`` stores plans): the next one
        before the switch, the previous one after it; None outside a reshard.
    """

    active: int
    next: int | None = None
    switch_at_ms: int | None = None
    phase: str = "done"
    other_plan: bytes | None = None


def _int(value: bytes | str | None) -> int | None:
    if value is None or value in (b"", ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def read_generations(redis: aioredis.Redis, keys: Keys) -> GenerationState | None:
    """The record, or None when there is none (every generation then counts as active)."""
    raw = await redis.hgetall(keys.generations())
    if not raw:
        return None
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    active = _int(fields.get("active"))
    if active is None:
        return None
    phase = fields.get("phase") or b"done"
    other = fields.get("other_plan")
    return GenerationState(active, _int(fields.get("next")), _int(fields.get("switch_at_ms")),
                           phase.decode() if isinstance(phase, bytes) else str(phase),
                           other if isinstance(other, bytes) and other else None)


async def write_generations(redis: aioredis.Redis, keys: Keys, state: GenerationState) -> None:
    """Replace the record with ``state`` (one transaction: a reader never sees half of it)."""
    mapping: dict[Any, Any] = {"active": state.active, "phase": state.phase}
    if state.next is not None:
        mapping["next"] = state.next
    if state.switch_at_ms is not None:
        mapping["switch_at_ms"] = state.switch_at_ms
    if state.other_plan is not None:
        mapping["other_plan"] = state.other_plan
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.generations())
        pipe.hset(keys.generations(), mapping=mapping)
        await pipe.execute()


def ack_value(state: GenerationState | None) -> str:
    """What a process acknowledges once it applied ``state``: ``"<next>:<T>"`` (0 for unset)."""
    if state is None:
        return "0:0"
    return f"{state.next or 0}:{state.switch_at_ms or 0}"


async def ack_generation(redis: aioredis.Redis, keys: Keys, generation: int, cluster_id: int, value: str) -> None:
    """Record that process ``generation``/``cluster_id`` applied the state :func:`ack_value` describes."""
    await redis.hset(keys.generation_acks(), f"{generation}:{cluster_id}", value)


async def read_acks(redis: aioredis.Redis, keys: Keys) -> dict[tuple[int, int], str]:
    """Every acknowledgement: ``(generation, cluster_id)`` → value."""
    out: dict[tuple[int, int], str] = {}
    for k, v in (await redis.hgetall(keys.generation_acks())).items():
        gen, _, cid = (k.decode() if isinstance(k, bytes) else k).partition(":")
        try:
            out[(int(gen), int(cid))] = v.decode() if isinstance(v, bytes) else str(v)
        except ValueError:
            continue
    return out


async def clear_acks(redis: aioredis.Redis, keys: Keys) -> None:
    await redis.delete(keys.generation_acks())
