"""Gateway building blocks without sockets: sessions and their buffer, routing, query checks."""

from __future__ import annotations

import json

from simulator.config import SimConfig
from simulator.gateway import _check_query
from simulator.sessions import LazyGuildCreate, Session, SessionTable, dispatch_frame
from simulator.state import ShardStats, Stats
from simulator.world import World


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _session(table: SessionTable, shard: int = 0, count: int = 1, buffer: int = 100) -> Session:
    s = Session(shard, count, 513, buffer, ShardStats(), Stats(), table.next_order())
    table.add(s)
    return s


def test_dispatch_frame_is_a_gateway_payload() -> None:
    payload = json.loads(dispatch_frame(7, "GUILD_CREATE", '{"id":"1"}'))
    assert payload == {"op": 0, "s": 7, "t": "GUILD_CREATE", "d": {"id": "1"}}


def test_session_buffers_while_detached_and_replays_after_a_sequence() -> None:
    table = SessionTable(ttl=10)
    s = _session(table, buffer=5)
    for i in range(3):
        s.push("E", str(i))
    assert s.seq == 3 and s.stats.dispatched == 0  # nothing went to a socket
    assert s.buffered == s.stats.buffered == s.totals.buffered == 3
    assert [json.loads(f.render())["s"] for f in s.replay_after(1) or []] == [2, 3]
    assert s.replay_after(3) == []
    assert s.replay_after(4) is None  # a sequence the session never reached
    for i in range(5):
        s.push("E", str(i))
    # The buffer holds seq 4..8 only: resuming from 2 would lose seq 3.
    assert s.replay_after(2) is None
    assert [f.seq for f in s.replay_after(3) or []] == [4, 5, 6, 7, 8]


def test_lazy_guild_create_renders_the_world_payload() -> None:
    world = World(SimConfig(guilds=3, guild_sizes="fixed"))
    table = SessionTable(ttl=10)
    s = _session(table)
    s.push_guild_creates(world.guilds, world)
    assert s.seq == 3
    item = s.buffer[1]
    assert isinstance(item, LazyGuildCreate) and item.seq == 2
    payload = json.loads(item.render())
    assert payload["t"] == "GUILD_CREATE" and payload["s"] == 2
    expected = world.guild_create_payload(world.guilds[1], s.intents, s.large_threshold)
    assert payload["d"] == json.loads(json.dumps(expected))


def test_target_is_the_newest_live_session_else_the_newest_resumable_one() -> None:
    clock = FakeClock()
    table = SessionTable(ttl=10, clock=clock)
    older, newer = _session(table), _session(table)
    assert table.target(1, 0) is newer  # neither is live: the newest resumable one
    older.conn = object()  # type: ignore[assignment]
    assert table.target(1, 0) is older  # the only live one wins over a newer detached one
    newer.conn = object()  # type: ignore[assignment]
    assert table.target(1, 0) is newer
    older.conn = newer.conn = None
    older.detached_at = newer.detached_at = clock.now
    clock.now += 10.5
    assert table.target(1, 0) is None  # both expired
    assert set(table.sweep()) == {older, newer} and len(table) == 0
    assert table.target(2, 1) is None


def test_counts_newest_first_covers_live_and_resumable_sessions() -> None:
    clock = FakeClock()
    table = SessionTable(ttl=10, clock=clock)
    a = _session(table, 0, 2)
    b = _session(table, 1, 4)
    assert table.counts_newest_first() == [4, 2]
    a.conn = object()  # type: ignore[assignment]
    assert table.counts_newest_first() == [4, 2]  # b is resumable: it still covers its guilds
    b.detached_at = clock.now
    clock.now += 11
    assert table.counts_newest_first() == [2]  # b's resume window passed
    assert table.next_expiry() == clock.now - 1


def test_query_checks() -> None:
    assert _check_query({"v": "10", "encoding": "json", "compress": "zlib-stream"}) is None
    assert _check_query({"v": "9"}) is None
    assert _check_query({"v": "10", "compress": "zstd-stream"}) is None
    assert _check_query({"v": "8"})[0] == 4012  # type: ignore[index]
    assert _check_query({})[0] == 4012  # type: ignore[index]
    assert _check_query({"v": "10", "encoding": "etf"})[0] == 4002  # type: ignore[index]
    assert _check_query({"v": "10", "compress": "gzip"})[0] == 4002  # type: ignore[index]
