"""The status document and the health verdict, from heartbeat fixtures."""

from __future__ import annotations

from typing import Any

from cluster.ops import format_status
from cluster.plan import plan
from cluster.state import build_status, health, progress_line
from ipc.heartbeat import ClusterBeat, ShardBeat

NOW = 1_700_000_100.0


def shard(sid: int, state: str = "READY") -> ShardBeat:
    return {"id": sid, "state": state, "latency_ms": 10.0 + sid, "guilds": 100 + sid, "last_event_age_s": 0.2,
            "identified_at": NOW - 50, "ready_at": NOW - 49, "identifies": 1, "resumes": 0, "reconnects": 0}


def beat(cid: int, shards: list[ShardBeat], state: str = "READY", reason: str | None = None) -> ClusterBeat:
    return {"v": 1, "cluster_id": cid, "host": "box", "pid": 4000 + cid, "started_at": NOW - 60.0,
            "written_at": NOW - 1, "state": state, "rss_bytes": 90_000_000, "events_per_s": 12.5,
            "metrics_port": 9100 + cid, "identify_blocked_reason": reason, "shards": shards}


CONTRACT_CLUSTER = {"id", "host", "pid", "state", "uptime_s", "rss_bytes", "events_per_s", "shards"}
CONTRACT_SHARD = {"id", "state", "latency_ms", "guilds", "last_event_age_s"}


def _check_shape(doc: dict[str, Any]) -> None:
    assert {"clusters", "shard_count", "max_concurrency"} <= set(doc)
    for c in doc["clusters"]:
        assert set(c) >= CONTRACT_CLUSTER
        for s in c["shards"]:
            assert set(s) == CONTRACT_SHARD


def test_all_ready() -> None:
    p = plan(8, 2, clusters=2)
    beats = {0: beat(0, [shard(i) for i in range(4)]), 1: beat(1, [shard(i) for i in range(4, 8)])}
    doc = build_status(p, beats, now=NOW)
    _check_shape(doc)  # type: ignore[arg-type]
    assert doc["shard_count"] == 8 and doc["max_concurrency"] == 2
    c1 = doc["clusters"][1]
    assert (c1["id"], c1["pid"], c1["uptime_s"], c1["metrics_port"]) == (1, 4001, 60.0, 9101)
    assert c1["shards"][2] == {"id": 6, "state": "READY", "latency_ms": 16.0, "guilds": 106, "last_event_age_s": 0.2}
    h = health(doc, p)
    assert h.ok and (h.ready, h.expected) == (8, 8) and h.problems == ()
    assert progress_line(doc, h) == "8/8 shards READY"


def test_missing_cluster_and_identifying_shard() -> None:
    p = plan(12, 4, clusters=3)
    beats = {0: beat(0, [shard(0), shard(1), shard(2, "IDENTIFYING"), shard(3, "CONNECTING")], state="STARTING"),
             2: beat(2, [shard(i) for i in range(8, 12)])}
    doc = build_status(p, beats, now=NOW)
    down = doc["clusters"][1]
    assert down["state"] == "DOWN" and down["pid"] is None
    assert [s["state"] for s in down["shards"]] == ["DOWN"] * 4
    h = health(doc, p)
    assert not h.ok and h.ready == 6
    assert "cluster-1 DOWN (shards 4-7)" in h.problems
    assert "shard 2 IDENTIFYING (cluster-0)" in h.problems
    assert progress_line(doc, h) == "6/12 shards READY (cluster-0 identifying shard 2, cluster-1 starting)"


def test_blocked_budget_is_a_problem_and_shown() -> None:
    p = plan(2, 1, clusters=1)
    reason = "identify budget exhausted: 3 left (reserve 10), resets in 600 s"
    doc = build_status(p, {0: beat(0, [shard(0), shard(1, "IDENTIFYING")], state="BLOCKED", reason=reason)}, NOW)
    assert doc["clusters"][0]["identify_blocked_reason"] == reason
    h = health(doc, p)
    assert not h.ok and f"cluster-0: {reason}" in h.problems
    assert reason in progress_line(doc, h)


def test_shard_missing_from_a_heartbeat_is_down_and_strays_are_listed() -> None:
    p = plan(4, 1, clusters=1)
    doc = build_status(p, {0: beat(0, [shard(0), shard(1), shard(2)]), 7: beat(7, [shard(40)])}, NOW)
    assert [s["state"] for s in doc["clusters"][0]["shards"]] == ["READY", "READY", "READY", "DOWN"]
    assert doc["clusters"][1]["id"] == 7  # a stray heartbeat (e.g. after a reshard) is still shown
    h = health(doc, p)
    assert not h.ok and h.problems == ("shard 3 DOWN (cluster-0)",)


def test_no_plan() -> None:
    doc = build_status(None, {0: beat(0, [shard(0)])}, NOW)
    assert doc["shard_count"] is None and len(doc["clusters"]) == 1
    h = health(doc, None)
    assert not h.ok and "no plan" in h.problems[0]


def test_stale_heartbeat_means_the_process_is_gone() -> None:
    p = plan(4, 2, clusters=2)
    old = beat(1, [shard(2), shard(3)])
    old["written_at"] = NOW - 12
    doc = build_status(p, {0: beat(0, [shard(0), shard(1)]), 1: old}, NOW, stale_after_s=11)
    assert doc["clusters"][1]["state"] == "STALE"
    assert [s["state"] for s in doc["clusters"][1]["shards"]] == ["DOWN", "DOWN"]
    h = health(doc, p)
    assert not h.ok and h.problems == ("cluster-1 STALE (pid 4001 stopped writing heartbeats) (shards 2-3)",)
    fresh = build_status(p, {0: beat(0, [shard(0), shard(1)]), 1: old}, NOW, stale_after_s=13)
    assert health(fresh, p).ok


def test_command_load_is_carried_when_reported() -> None:
    p = plan(2, 1, clusters=2)
    load = {"running": 64, "queued": 10, "max_running": 64, "max_queued": 512, "deferred": 4, "shed": 7}
    with_load = beat(0, [shard(0)])
    with_load["commands"] = load  # type: ignore[typeddict-item]
    doc = build_status(p, {0: with_load, 1: beat(1, [shard(1)])}, now=NOW)
    assert doc["clusters"][0]["commands"] == load
    assert doc["clusters"][1]["commands"] is None  # an older cluster that does not report it
    text = format_status(doc, None)
    assert "commands: 64/64 running, 10/512 waiting; since start 4 deferred, 7 shed" in text
