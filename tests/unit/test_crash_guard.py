"""The crash-loop guard: its policy (back-off, cap, window) and its decisions, with a fake supervisord."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cluster.crash_guard import CrashGuard, serve
from cluster.crash_policy import RESTARTING, RUNNING, STOPPED, CrashPolicy, CrashRecord, on_crash, record_from_json
from tests.support import ManualClock

POLICY = CrashPolicy(max_crashes=5, window_s=600, backoff_base_s=1, backoff_max_s=60)


@given(base=st.floats(0, 100), cap=st.floats(0, 1000), n=st.integers(1, 10_000))
def test_the_delay_grows_and_never_passes_its_cap(base: float, cap: float, n: int) -> None:
    policy = CrashPolicy(5, 600, base, cap)
    assert 0 <= policy.delay(n) <= cap
    assert policy.delay(n) <= policy.delay(n + 1)
    if n == 1:
        assert policy.delay(n) == 0  # the first restart is at once: a restarted cluster resumes
    elif n <= 40 and base * 2 ** (n - 2) <= cap:
        assert policy.delay(n) == base * 2 ** (n - 2)


@given(st.lists(st.floats(0, 5000), min_size=1, max_size=30).map(sorted),
       st.integers(1, 10), st.floats(1, 3000))
def test_the_cap_counts_only_crashes_within_the_window(times: list[float], cap: int, window: float) -> None:
    policy = CrashPolicy(cap, window, 1, 60)
    record: CrashRecord | None = None
    for i, t in enumerate(times):
        if record is not None and record["state"] == STOPPED:
            break
        record = on_crash(policy, record, 3, t, 1)
        assert record["crashes"] == [x for x in times[:i + 1] if t - x < window]
        if record["state"] == STOPPED:
            assert len(record["crashes"]) >= cap
            assert record["restart_at"] is None
        else:
            assert len(record["crashes"]) < cap
            assert record["restart_at"] == t + policy.delay(len(record["crashes"]))


def test_the_delays_and_the_reason_an_operator_reads() -> None:
    record = None
    delays = []
    for i in range(5):
        record = on_crash(POLICY, record, 1, 1000.0 + i, 1)
        if record["restart_at"] is not None:
            delays.append(record["restart_at"] - (1000.0 + i))
    assert delays == [0, 1, 2, 4]  # the first at once: a restarted cluster resumes, spending nothing
    assert record is not None and record["state"] == STOPPED
    assert record["reason"] == ("crash loop: 5 crashes in 10 min; last exit code 1; stopped "
                                "(`innkeeper restart 1` starts it again)")
    assert on_crash(POLICY, None, 2, 0.0, -1)["reason"] == (
        "crashed (killed by a signal): crash 1 of 5 in 10 min; restarting in 0 s")
    # a crash after the window is a first crash again
    assert len(on_crash(POLICY, record, 1, 1000.0 + 4 + 600, 1)["crashes"]) == 1


def test_records_read_back_or_are_refused() -> None:
    record = on_crash(POLICY, None, 0, 5.0, 1)
    assert record_from_json(dict(record)) == record
    assert record_from_json({"state": "bogus"}) is None
    assert record_from_json("not a dict") is None


class FakeSupervisor:
    def __init__(self) -> None:
        self.info: dict[str, dict[str, Any]] = {}
        self.started: list[str] = []

    def process(self, name: str) -> dict[str, Any] | None:
        return self.info.get(name)

    def processes(self) -> list[dict[str, Any]]:
        return [{"group": n.split(":")[0], "name": n.split(":")[1], **i} for n, i in self.info.items()]

    def start(self, name: str) -> None:
        self.started.append(name)
        self.info[name] = {"statename": "STARTING", "exitstatus": 0}


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[int, CrashRecord] = {}

    def load(self) -> list[CrashRecord]:
        return list(self.records.values())

    def save(self, record: CrashRecord) -> None:
        self.records[record["cluster"]] = record

    def delete(self, cluster: int) -> None:
        self.records.pop(cluster, None)


def _exited(sup: FakeSupervisor, guard: CrashGuard, code: int = 1) -> None:
    sup.info["clusters:cluster-0"] = {"statename": "EXITED", "exitstatus": code}
    guard.handle("PROCESS_STATE_EXITED", {"processname": "cluster-0", "groupname": "clusters",
                                          "from_state": "RUNNING", "expected": "0", "pid": "42"})


def test_the_guard_restarts_after_the_delay_then_stops_past_the_cap() -> None:
    clock, sup, store = ManualClock(), FakeSupervisor(), MemoryStore()
    guard = CrashGuard(POLICY, sup, store, clock=clock)
    for crash, delay in enumerate([0, 1, 2, 4], start=1):
        _exited(sup, guard)
        assert store.records[0]["state"] == RESTARTING and guard.next_due() == clock() + delay
        if delay:
            clock.advance(delay - 0.01)
            guard.run_due()
            assert len(sup.started) == crash - 1  # not yet
            clock.advance(0.01)
        guard.run_due()
        assert len(sup.started) == crash
        guard.handle("PROCESS_STATE_RUNNING", {"processname": "cluster-0", "groupname": "clusters"})
        assert store.records[0]["state"] == RUNNING and store.records[0]["restarts"] == crash
        clock.advance(30)
    _exited(sup, guard)
    assert store.records[0]["state"] == STOPPED and guard.next_due() is None
    assert store.records[0]["reason"].startswith("crash loop: 5 crashes in 10 min; last exit code 1; stopped")
    clock.advance(3600)
    guard.run_due()
    assert len(sup.started) == 4
    # an operator starts it: a fresh history
    guard.handle("PROCESS_STATE_RUNNING", {"processname": "cluster-0", "groupname": "clusters"})
    assert 0 not in store.records


def test_the_guard_leaves_expected_exits_other_programs_and_a_shutdown_alone() -> None:
    clock, sup, store = ManualClock(), FakeSupervisor(), MemoryStore()
    guard = CrashGuard(POLICY, sup, store, clock=clock)
    guard.handle("PROCESS_STATE_EXITED", {"processname": "cluster-0", "groupname": "clusters", "expected": "1"})
    guard.handle("PROCESS_STATE_EXITED", {"processname": "simulator", "groupname": "simulator", "expected": "0"})
    assert not store.records
    _exited(sup, guard)
    guard.handle("SUPERVISOR_STATE_CHANGE_STOPPING", {})
    clock.advance(10)
    guard.run_due()
    assert not sup.started


def test_a_cluster_started_by_someone_else_meanwhile_is_not_started_twice() -> None:
    clock, sup, store = ManualClock(), FakeSupervisor(), MemoryStore()
    guard = CrashGuard(POLICY, sup, store, clock=clock)
    _exited(sup, guard)
    sup.info["clusters:cluster-0"] = {"statename": "RUNNING", "exitstatus": 0}  # `innkeeper restart 0`
    guard.handle("PROCESS_STATE_RUNNING", {"processname": "cluster-0", "groupname": "clusters"})
    clock.advance(5)
    guard.run_due()
    assert not sup.started and not store.records


def test_a_death_while_the_guard_was_down_is_handled_when_it_starts() -> None:
    clock, sup, store = ManualClock(), FakeSupervisor(), MemoryStore()
    sup.info["clusters:cluster-2"] = {"statename": "EXITED", "exitstatus": 1}
    sup.info["clusters:cluster-3"] = {"statename": "EXITED", "exitstatus": 78}  # fatal: not a crash
    guard = CrashGuard(POLICY, sup, store, clock=clock)
    guard.reconcile()
    assert set(store.records) == {2} and store.records[2]["state"] == RESTARTING


def test_serve_speaks_the_event_listener_protocol() -> None:
    clock, sup, store = ManualClock(), FakeSupervisor(), MemoryStore()
    sup.info["clusters:cluster-0"] = {"statename": "EXITED", "exitstatus": 1}
    guard = CrashGuard(CrashPolicy(5, 600, 0, 0), sup, store, clock=clock)  # no delay: restarts at once
    payload = b"processname:cluster-0 groupname:clusters from_state:RUNNING expected:0 pid:42"
    header = (f"ver:3.0 server:supervisor serial:1 pool:crashguard poolserial:1 eventname:PROCESS_STATE_EXITED "
              f"len:{len(payload)}\n").encode()
    out = io.BytesIO()
    stdin = open(_fifo_with(header + payload), "rb")  # noqa: SIM115 - select needs a real descriptor
    with stdin:
        serve(guard, stdin, out)
    assert out.getvalue() == b"READY\nRESULT 2\nOKREADY\n"
    assert sup.started == ["clusters:cluster-0"]


def _fifo_with(data: bytes) -> str:
    import os
    import tempfile

    fd, path = tempfile.mkstemp()
    os.write(fd, data)
    os.close(fd)
    return path


def test_status_shows_the_guard_and_a_dead_process_heartbeat_is_no_news() -> None:
    from cluster.plan import plan
    from cluster.state import build_status, health

    p = plan(4, 1, clusters=2)
    beat = {"cluster_id": 0, "host": "h", "pid": 7, "state": "READY", "started_at": 0.0, "written_at": 99.0,
            "rss_bytes": 1, "events_per_s": 0.0, "metrics_port": None, "identify_blocked_reason": None,
            "shards": [{"id": i, "state": "READY", "latency_ms": 1.0, "guilds": 1, "last_event_age_s": 0.1}
                       for i in (0, 1)]}
    stopped = on_crash(CrashPolicy(1, 600, 1, 60), None, 0, 99.5, 1)
    doc = build_status(p, {0: beat}, now=100.0, stale_after_s=5, guards={0: stopped})  # type: ignore[dict-item]
    cluster = doc["clusters"][0]
    assert cluster["state"] == "DOWN" and cluster["crash_guard"] is not None
    assert cluster["crash_guard"]["state"] == STOPPED and cluster["crash_guard"]["crashes"] == 1
    assert doc["clusters"][1]["crash_guard"] is None
    h = health(doc, p)
    assert f"cluster-0 DOWN (shards 0-1): {stopped['reason']}" in h.problems
    restarting = on_crash(POLICY, on_crash(POLICY, None, 0, 99.0, 1), 0, 99.5, 1)  # the 2nd: 1 s
    guard = build_status(p, {}, now=100.0, guards={0: restarting})["clusters"][0]["crash_guard"]
    assert guard is not None and guard["restart_in_s"] == 0.5
