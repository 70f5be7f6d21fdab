"""The cluster plan: hypothesis properties and the edge cases operators hit."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.plan import Plan, default_shards_per_cluster, format_shard_ids, plan
from innkeeper.errors import UsageError
from shard.__main__ import parse_shard_ids


@st.composite
def plan_args(draw: st.DrawFn) -> tuple[int, int, int | None, int | None, int]:
    mc = draw(st.sampled_from([1, 2, 4, 16, 32]) | st.integers(1, 40))
    shards = draw(st.integers(1, 600))
    total = math.ceil(shards / mc) * mc
    mode = draw(st.sampled_from(["clusters", "size", "default"]))
    clusters = draw(st.integers(1, total)) if mode == "clusters" else None
    size = draw(st.integers(1, total)) if mode == "size" else None
    if clusters is not None:
        n = clusters
    elif size is not None:
        n = math.ceil(total / size)
    else:
        n = math.ceil(total / default_shards_per_cluster(total, mc))
    hosts = draw(st.integers(1, n))
    return shards, mc, clusters, size, hosts


@settings(max_examples=300, deadline=None)
@given(plan_args())
def test_plan_properties(args: tuple[int, int, int | None, int | None, int]) -> None:
    shards, mc, clusters, size, hosts = args
    p = plan(shards, mc, clusters=clusters, shards_per_cluster=size, hosts=hosts)
    # The shard count is the smallest multiple of max_concurrency that holds the shards asked for.
    assert p.shard_count % mc == 0
    assert shards <= p.shard_count < shards + mc
    # Every shard exactly once, in contiguous ascending ranges, clusters numbered in order.
    flat = [s for c in p.clusters for s in c.shard_ids]
    assert flat == list(range(p.shard_count))
    assert [c.id for c in p.clusters] == list(range(len(p.clusters)))
    for c in p.clusters:
        assert c.shard_ids, "no empty cluster"
        assert list(c.shard_ids) == list(range(c.shard_ids[0], c.shard_ids[-1] + 1))
    if clusters is not None:
        assert len(p.clusters) == clusters
        sizes = [len(c.shard_ids) for c in p.clusters]
        assert max(sizes) - min(sizes) <= 1
    if size is not None:
        assert all(len(c.shard_ids) == size for c in p.clusters[:-1])
        assert len(p.clusters[-1].shard_ids) <= size
    # Hosts: partitioned, each a contiguous group of clusters, none empty, balanced.
    by_host = [p.for_host(h) for h in range(hosts)]
    assert all(by_host), "every host gets a cluster"
    assert [c for group in by_host for c in group] == list(p.clusters)
    counts = [len(g) for g in by_host]
    assert max(counts) - min(counts) <= 1
    assert p.hosts == hosts
    # The same on every host: host_index does not change the plan.
    assert plan(shards, mc, clusters=clusters, shards_per_cluster=size, hosts=hosts, host_index=hosts - 1) == p
    # Round trip through the stored form.
    assert Plan.from_dict(p.as_dict()) == p


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([1, 2, 4, 8, 16, 32, 64]))
def test_default_cluster_size_fills_whole_identify_rounds(shards: int, mc: int) -> None:
    p = plan(shards, mc)
    for c in p.clusters[:-1]:
        assert len(c.shard_ids) % mc == 0
        assert 1 <= len(c.shard_ids) <= max(16, mc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=50, unique=True))
def test_format_shard_ids_round_trips_through_the_shard_cli(ids: list[int]) -> None:
    assert parse_shard_ids(format_shard_ids(ids)) == sorted(ids)


def test_examples() -> None:
    p = plan(16, 4, clusters=4)
    assert [c.shard_ids for c in p.clusters] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)]
    assert p.identify_floor_windows == 3
    assert plan(10, 4, clusters=3).shard_count == 12
    assert [len(c.shard_ids) for c in plan(10, 1, clusters=3).clusters] == [4, 3, 3]
    assert plan(64, 16).identify_floor_windows == 3
    assert plan(64, 1).identify_floor_windows == 63
    assert format_shard_ids((8, 9, 10, 11)) == "8-11"
    two_hosts = plan(32, 4, clusters=4, hosts=2)
    assert [c.id for c in two_hosts.for_host(1)] == [2, 3]
    assert two_hosts.cluster_of_shard(17).id == 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"shard_count": 0, "max_concurrency": 1}, "shard count"),
        ({"shard_count": 4, "max_concurrency": 0}, "max_concurrency"),
        ({"shard_count": 4, "max_concurrency": 1, "clusters": 5}, "at most one cluster per shard"),
        ({"shard_count": 4, "max_concurrency": 1, "clusters": 0}, "cluster count"),
        ({"shard_count": 4, "max_concurrency": 1, "shards_per_cluster": 0}, "shards per cluster"),
        ({"shard_count": 4, "max_concurrency": 1, "clusters": 2, "shards_per_cluster": 2}, "not both"),
        ({"shard_count": 4, "max_concurrency": 1, "clusters": 2, "hosts": 3}, "at least one cluster per host"),
        ({"shard_count": 4, "max_concurrency": 1, "hosts": 2, "host_index": 2}, "host index"),
    ],
)
def test_impossible_input_is_a_clear_error(kwargs: dict[str, int], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        plan(**kwargs)


def test_malformed_stored_plan_is_rejected() -> None:
    good = plan(8, 2, clusters=2).as_dict()
    broken = dict(good, clusters=[good["clusters"][0]])
    with pytest.raises(ValueError, match="cover"):
        Plan.from_dict(broken)
    with pytest.raises(ValueError, match="malformed"):
        Plan.from_dict({"shard_count": "x"})
