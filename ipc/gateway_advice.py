"""What Discord advises about the shard count, as the auto-reshard helper last saw it (one hash in Redis).

``cluster/auto_reshard.py`` asks ``GET /gateway/bot`` every ``INNKEEPER_AUTO_RESHARD_INTERVAL`` and
writes :class:`GatewayAdvice` here for the status service, ``innkeeper status`` and the metrics. A
cluster whose gateway closes with 4011 ("sharding required": a shard holds too many guilds) says so
here first (:func:`report_sharding_required`, from the exiting process, hence synchronous), and the
helper checks at once instead of at its next interval.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ipc.keys import Keys

__all__ = ("GatewayAdvice", "read_advice", "write_advice", "report_sharding_required", "read_sharding_required")

#: The hash fields: the advice (JSON) and the last 4011 report.
_ADVICE, _REQUIRED = "advice", "sharding_required"


@dataclass(frozen=True, slots=True)
class GatewayAdvice:
    """One check of ``GET /gateway/bot`` against the running plan.

    Attributes
    ----------
    recommended:
        Discord's recommended shard count.
    running:
        Shards in the plan in Redis.
    target:
        The shard count the helper wants (None: none, the plan is fine).
    action:
        ``none``, ``resharding``, ``resharded``, ``advised`` (``INNKEEPER_AUTO_RESHARD=false``: only
        reported), ``failed`` (see ``detail``).
    enabled:
        ``INNKEEPER_AUTO_RESHARD``.
    checked_at:
        Unix time of the check.
    detail:
        Why, in one line (the error of a failed reshard, the 4011 that triggered the check…).
    """

    recommended: int
    running: int | None
    target: int | None
    action: str
    enabled: bool
    checked_at: float
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _decode(raw: Any) -> Any:
    if not isinstance(raw, bytes | str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def write_advice(redis: aioredis.Redis, keys: Keys, advice: GatewayAdvice) -> None:
    await redis.hset(keys.gateway_advice(), _ADVICE, json.dumps(advice.as_dict()))


async def read_advice(redis: aioredis.Redis, keys: Keys) -> GatewayAdvice | None:
    """The last advice, or None (no check yet, or a malformed record)."""
    data = _decode(await redis.hget(keys.gateway_advice(), _ADVICE))
    if not isinstance(data, dict):
        return None
    try:
        return GatewayAdvice(**data)
    except TypeError:
        return None


def report_sharding_required(redis_url: str, keys: Keys, cluster_id: int, shard_id: int | None) -> None:
    """A cluster's gateway closed with 4011: record it (never raises; the process is exiting anyway)."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.hset(keys.gateway_advice(), _REQUIRED,
                        json.dumps({"at": time.time(), "cluster": cluster_id, "shard": shard_id}))
        finally:
            client.close()
    except Exception:  # noqa: BLE001, S110 - best effort: the periodic check finds it later anyway
        pass


async def read_sharding_required(redis: aioredis.Redis, keys: Keys) -> dict[str, Any] | None:
    """The last 4011 report (``at``, ``cluster``, ``shard``), or None."""
    data = _decode(await redis.hget(keys.gateway_advice(), _REQUIRED))
    return data if isinstance(data, dict) and isinstance(data.get("at"), int | float) else None
