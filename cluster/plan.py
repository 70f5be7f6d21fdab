"""The cluster plan: which shard ids run in which cluster, on which host.

:func:`plan` is a pure function of its arguments, so every host computes the same plan and takes its
own part with :meth:`Plan.for_host`. Shards are split into contiguous ranges; clusters are split
into contiguous groups per host.

The shard count is rounded **up** to a multiple of ``max_concurrency``. Discord puts shard ``i``
in identify bucket ``i % max_concurrency`` and lets each bucket identify one shard per window, so
``S`` shards need ``ceil(S / max_concurrency)`` windows either way: the extra shards are free at
start-up, they spread the guilds thinner, and they keep every bucket equally full (Discord's own
recommendation for large bots). The default cluster size is a multiple of ``max_concurrency`` too,
so a cluster's shards fill whole identify rounds and no cluster waits on another's bucket.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from innkeeper.errors import ErrorCode, UsageError

__all__ = ("ClusterSpec", "Plan", "plan", "default_shards_per_cluster", "format_shard_ids", "CLUSTERS_GROUP",
           "group_name", "is_clusters_group", "next_first_id")

#: The default cluster size aims here: large enough to amortise a process, small enough that a
#: crash or restart costs few shards.
_TARGET_SHARDS_PER_CLUSTER = 12


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """One cluster: a process running a contiguous range of shards on one host."""

    id: int
    host_index: int
    shard_ids: tuple[int, ...]

    @property
    def name(self) -> str:
        """The supervisord program name, ``cluster-N``."""
        return f"cluster-{self.id}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host_index": self.host_index, "shard_ids": list(self.shard_ids)}


@dataclass(frozen=True, slots=True)
class Plan:
    """Every cluster of the bot, over every host."""

    shard_count: int
    max_concurrency: int
    clusters: tuple[ClusterSpec, ...]
    #: Which generation of the bot's clusters this plan describes: a zero-downtime reshard runs the
    #: next generation beside the current one for a while (``cluster/reshard.py``).
    generation: int = 0

    @property
    def group(self) -> str:
        """The supervisord group of this generation's programs: ``clusters``, then ``clusters-g1``, ``-g2``…"""
        return group_name(self.generation)

    @property
    def hosts(self) -> int:
        return 1 + max((c.host_index for c in self.clusters), default=0)

    def for_host(self, host_index: int) -> tuple[ClusterSpec, ...]:
        """The clusters that ``host_index`` runs."""
        return tuple(c for c in self.clusters if c.host_index == host_index)

    def cluster(self, cluster_id: int) -> ClusterSpec:
        """The cluster with id ``cluster_id``; raises :class:`UsageError` when there is none."""
        for c in self.clusters:
            if c.id == cluster_id:
                return c
        ids = format_shard_ids([c.id for c in self.clusters])
        raise UsageError(f"no cluster {cluster_id} in the plan (clusters {ids})")

    def cluster_of_shard(self, shard_id: int) -> ClusterSpec:
        for c in self.clusters:
            if c.shard_ids and c.shard_ids[0] <= shard_id <= c.shard_ids[-1]:
                return c
        raise UsageError(f"no shard {shard_id} in the plan (shards 0-{self.shard_count - 1})")

    @property
    def identify_floor_windows(self) -> int:
        """Identify windows a cold start needs after the first: ``ceil(S / max_concurrency) - 1``."""
        return math.ceil(self.shard_count / self.max_concurrency) - 1

    def as_dict(self) -> dict[str, Any]:
        return {"shard_count": self.shard_count, "max_concurrency": self.max_concurrency,
                "clusters": [c.as_dict() for c in self.clusters], "generation": self.generation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Rebuild a plan stored with :meth:`as_dict`; raises ``ValueError`` on a malformed one."""
        try:
            clusters = tuple(
                ClusterSpec(int(c["id"]), int(c["host_index"]), tuple(int(s) for s in c["shard_ids"]))
                for c in data["clusters"]
            )
            result = cls(int(data["shard_count"]), int(data["max_concurrency"]), clusters,
                         int(data.get("generation", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed plan: {exc!r}") from None
        seen = sorted(s for c in clusters for s in c.shard_ids)
        if seen != list(range(result.shard_count)):
            raise ValueError("malformed plan: shard ids do not cover 0..shard_count-1 exactly once")
        if len({c.id for c in clusters}) != len(clusters) or result.generation < 0:
            raise ValueError("malformed plan: cluster ids repeat, or a negative generation")
        return result


#: The supervisord group of generation 0 (every plan before its first zero-downtime reshard).
CLUSTERS_GROUP = "clusters"


def group_name(generation: int) -> str:
    """The supervisord group of one generation's cluster programs."""
    return CLUSTERS_GROUP if generation == 0 else f"{CLUSTERS_GROUP}-g{generation}"


def is_clusters_group(group: str) -> bool:
    """Whether ``group`` holds cluster programs (any generation's)."""
    if group == CLUSTERS_GROUP:
        return True
    head, _, tail = group.rpartition("-g")
    return head == CLUSTERS_GROUP and tail.isdigit()


def default_shards_per_cluster(shard_count: int, max_concurrency: int) -> int:
    """A cluster size near 12 shards that is a multiple of ``max_concurrency`` (and at most ``shard_count``).

    With a large ``max_concurrency`` (16, 32…) a cluster holds one full identify round.
    """
    rounds = max(1, round(_TARGET_SHARDS_PER_CLUSTER / max_concurrency))
    return min(shard_count, rounds * max_concurrency)


def _bad(message: str) -> UsageError:
    return UsageError(message, code=ErrorCode.USAGE)


def plan(
    shard_count: int,
    max_concurrency: int,
    clusters: int | None = None,
    shards_per_cluster: int | None = None,
    hosts: int = 1,
    host_index: int = 0,
    *,
    generation: int = 0,
    first_id: int = 0,
) -> Plan:
    """Split ``shard_count`` shards into clusters and the clusters over hosts.

    Parameters
    ----------
    shard_count:
        Shards wanted (Discord's recommendation or an operator's choice); rounded up to a multiple
        of ``max_concurrency``.
    max_concurrency:
        ``session_start_limit.max_concurrency`` from ``GET /gateway/bot``.
    clusters:
        How many clusters; exclusive with ``shards_per_cluster``. Shards are spread as evenly as
        contiguous ranges allow (sizes differ by at most one).
    shards_per_cluster:
        Cluster size; the last cluster may be smaller. Default: :func:`default_shards_per_cluster`.
    hosts:
        How many hosts share the clusters; each gets a contiguous group (sizes differ by at most one).
    host_index:
        Validated against ``hosts``; the plan itself covers every host (see :meth:`Plan.for_host`).
    generation:
        The plan's generation (0 until the first zero-downtime reshard).
    first_id:
        The first cluster id: a reshard numbers the new generation's clusters apart from the running
        ones, so the two never share a program name, heartbeat, metrics port or log.

    Raises
    ------
    UsageError
        On impossible input: no shards, more clusters than shards, more hosts than clusters…
    """
    if first_id < 0 or generation < 0:
        raise _bad("the first cluster id and the generation must be 0 or more")
    for name, value in (("shard count", shard_count), ("max_concurrency", max_concurrency), ("hosts", hosts)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _bad(f"{name} must be a positive integer, got {value!r}")
    if not 0 <= host_index < hosts:
        raise _bad(f"host index must be between 0 and {hosts - 1}, got {host_index}")
    if clusters is not None and shards_per_cluster is not None:
        raise _bad("give either a cluster count or a cluster size, not both")
    total = math.ceil(shard_count / max_concurrency) * max_concurrency

    if clusters is not None:
        if clusters < 1:
            raise _bad(f"cluster count must be at least 1, got {clusters}")
        if clusters > total:
            raise _bad(f"{clusters} clusters cannot share {total} shards: at most one cluster per shard")
        base, extra = divmod(total, clusters)
        sizes = [base + (1 if i < extra else 0) for i in range(clusters)]
    else:
        size = shards_per_cluster if shards_per_cluster is not None else default_shards_per_cluster(
            total, max_concurrency)
        if size < 1:
            raise _bad(f"shards per cluster must be at least 1, got {size}")
        full, rest = divmod(total, size)
        sizes = [size] * full + ([rest] if rest else [])

    n_clusters = len(sizes)
    if hosts > n_clusters:
        raise _bad(f"{hosts} hosts cannot share {n_clusters} clusters: at least one cluster per host")
    per_host, host_extra = divmod(n_clusters, hosts)
    host_of: list[int] = []
    for h in range(hosts):
        host_of.extend([h] * (per_host + (1 if h < host_extra else 0)))

    specs: list[ClusterSpec] = []
    start = 0
    for cid, size in enumerate(sizes):
        specs.append(ClusterSpec(first_id + cid, host_of[cid], tuple(range(start, start + size))))
        start += size
    return Plan(total, max_concurrency, tuple(specs), generation)


def format_shard_ids(shard_ids: tuple[int, ...] | list[int]) -> str:
    """``(8, 9, 10, 11)`` → ``"8-11"``; non-contiguous ids are comma-separated ranges."""
    ids = sorted(shard_ids)
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def next_first_id(running: Plan, cluster_count: int) -> int:
    """The first cluster id of the generation that will run beside ``running``: 0 when ids
    ``0..cluster_count-1`` are free, else one past the highest running id."""
    ids = {c.id for c in running.clusters}
    return 0 if ids.isdisjoint(range(cluster_count)) else max(ids) + 1
