"""A session's delivery books and the router, without sockets: what counts as dispatched, buffered,
replayed and lost, and which sessions an event goes to while generations overlap."""

from __future__ import annotations

import json
from collections.abc import Callable

from simulator.frames import LazyFrame
from simulator.routing import Router
from simulator.sessions import Frame, Session, SessionTable
from simulator.state import Stats

INTENTS = 513 | (1 << 15)  # GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeSocket:
    """A :class:`~simulator.sessions.SessionSocket` whose "writer" is :meth:`flush`."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.owner: Session | None = None
        self.writable = True
        self.done = False
        self.silent = False
        self.queue: list[Frame] = []
        self.wire: list[dict[str, object]] = []

    def send(self, frame: Frame) -> None:
        if self.writable:
            self.queue.append(frame)

    def close(self, code: int, reason: str = "", *, keep_session: bool = True) -> None:
        self.writable = False

    def silence(self) -> None:
        self.silent, self.writable = True, False
        self.queue.clear()

    def set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        pass

    def flush(self, n: int | None = None) -> None:
        """Write the first ``n`` queued frames (all by default), moving the owner's ``written_seq``."""
        todo, self.queue = self.queue[:n], self.queue[len(self.queue[:n]):]
        for frame in todo:
            assert isinstance(frame, LazyFrame)
            self.wire.append(json.loads(frame.render()))
            if self.owner is not None and frame.seq > self.owner.written_seq:
                self.owner.written_seq = frame.seq


def _session(table: SessionTable, totals: Stats, shard: int = 0, count: int = 1, intents: int = INTENTS) -> Session:
    s = Session(shard, count, intents, 100, totals.shards[shard], totals, table.next_order())
    table.add(s)
    return s


def _attached(table: SessionTable, totals: Stats, shard: int = 0, count: int = 1) -> tuple[Session, FakeSocket]:
    s = _session(table, totals, shard, count)
    sock = FakeSocket()
    s.attach(sock)
    return s, sock


def test_written_not_queued_is_delivered_and_the_rest_is_lost_when_the_session_ends() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    s, sock = _attached(table, totals)
    for i in range(5):
        s.push("E", str(i))
    assert s.dispatched == 5 and s.buffered == 0
    sock.flush(3)  # the socket died with two frames still queued
    s.conn = None
    s.push("E", "5")  # detached: buffered for a RESUME
    assert (s.written_seq, s.undelivered, s.buffered) == (3, 3, 1)
    assert s.close_books() == 3 and s.close_books() == 0  # once
    assert s.lost == totals.lost == totals.lost_buffered == totals.shards[0].lost == 3
    assert not s.buffer


def test_a_resume_replays_so_nothing_is_lost() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    s, sock = _attached(table, totals)
    for i in range(4):
        s.push("E", str(i))
    sock.flush(2)
    s.conn = None
    s.push("E", "4")
    again = FakeSocket()
    frames = s.replay_after(2)
    assert frames is not None and [f.seq for f in frames] == [3, 4, 5]
    s.attach(again)
    for f in frames:
        again.send(f)
    s.count_replayed(len(frames))
    again.flush()
    assert [m["s"] for m in again.wire] == [3, 4, 5]
    assert (s.replayed, s.resumes, s.written_seq, s.undelivered) == (3, 1, 5, 0)
    assert totals.replayed == 3 and totals.dispatched == 4 + 3  # the shard's dispatched counts replays, as before
    assert s.close_books() == 0 and totals.lost == 0


def test_a_silenced_socket_buffers_and_acknowledgements_are_kept() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    s, sock = _attached(table, totals)
    s.push("E", "0")
    sock.flush()
    s.acknowledge(1)
    s.acknowledge(7)  # a seq never sent is ignored
    s.acknowledge(None)
    assert s.acked_seq == 1
    sock.silence()
    s.push("E", "1")
    assert not s.writable and s.buffered == 1 and s.dispatched == 1
    assert s.state(100.0, 5) == "silent"
    report = s.report(100.0, 5)
    assert report["undelivered"] == 1 and report["acked_seq"] == 1 and report["state"] == "silent"


def test_state_and_resume_window() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    s, sock = _attached(table, totals)
    assert s.state(0.0, 5) == "live"
    sock.close(4000)
    assert s.state(0.0, 5) == "closing"
    s.conn, s.detached_at = None, 10.0
    assert s.state(15.0, 5) == "resumable" and s.resumable(15.0, 5)
    assert s.report(12.0, 5)["resumable_for_s"] == 3.0
    assert not s.resumable(15.01, 5) and s.state(15.01, 5) == "ended"


def test_every_live_session_covering_a_guild_gets_its_events() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    router = Router(table, totals, bot_id=1)
    old = [_attached(table, totals, shard, 2) for shard in range(2)]
    new = [_attached(table, totals, shard, 4) for shard in range(4)]
    guild_id = (6 << 22) | 12345  # shard 0 of 2, shard 2 of 4
    assert router.dispatch_guild(guild_id, "MESSAGE_CREATE", {"n": 1})
    assert [len(sock.queue) for _, sock in old] == [1, 0]
    assert [len(sock.queue) for _, sock in new] == [0, 0, 1, 0]
    assert router.dispatch_guild_json(guild_id, "MESSAGE_CREATE", '{"n":2}')
    assert router.dispatch_shard(0, "USER_UPDATE", {"n": 3}) == 2  # shard 0 of both counts
    twin, twin_sock = _attached(table, totals, 0, 2)  # a second session of [0, 2]
    router.changed()
    assert router.dispatch_guild(guild_id, "MESSAGE_CREATE", {"n": 4})
    assert len(twin_sock.queue) == 1 and len(old[0][1].queue) == 4 and len(new[2][1].queue) == 3
    assert totals.lost == 0 and twin.dispatched == 1


def test_without_a_live_session_the_newest_resumable_one_buffers_else_the_event_is_lost() -> None:
    clock = FakeClock()
    totals = Stats()
    table = SessionTable(ttl=5, clock=clock)
    router = Router(table, totals, bot_id=1)
    gen8 = _session(table, totals, 3, 8)  # a resumable session of an older generation
    gen8.detached_at = clock.now
    live16 = _attached(table, totals, 0, 16)[0]
    guild_id = (3 << 22) | 1  # shard 3 of 8, shard 3 of 16: no live session covers it
    assert router.dispatch_guild(guild_id, "MESSAGE_CREATE", {"n": 1})
    assert gen8.buffered == 1 and live16.dispatched == 0
    clock.now += 6  # gen8's window passed
    assert not router.dispatch_guild(guild_id, "MESSAGE_CREATE", {"n": 2})
    assert totals.lost == totals.lost_unrouted == 1


def test_a_copy_delivered_elsewhere_is_not_lost() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    router = Router(table, totals, bot_id=1)
    silent, silent_sock = _attached(table, totals, 0, 1)
    healthy, healthy_sock = _attached(table, totals, 0, 2)
    silent_sock.silence()
    assert router.dispatch_guild(2 << 22, "MESSAGE_CREATE", {"n": 1})  # shard 0 of 1 and of 2
    healthy_sock.flush()
    assert silent.buffered == 1 and healthy.dispatched == 1
    assert silent.close_books() == 0 and healthy.close_books() == 0  # the bot got it through `healthy`
    assert totals.lost == 0


def test_intents_are_checked_per_session() -> None:
    totals = Stats()
    table = SessionTable(ttl=5)
    router = Router(table, totals, bot_id=1)
    with_content, a = _attached(table, totals, 0, 1)
    without = _session(table, totals, 0, 2, intents=513)
    b = FakeSocket()
    without.attach(b)
    router.changed()
    message = {"id": "5", "content": "secret", "author": {"id": "9"}, "mentions": []}
    assert router.dispatch_guild(0, "MESSAGE_CREATE", message)
    assert router.dispatch_guild_json(0, "MESSAGE_CREATE", json.dumps(message))
    assert not router.dispatch_guild(0, "TYPING_START", {"user_id": "9"})  # neither asked for typing
    a.flush()
    b.flush()
    assert [m["d"]["content"] for m in a.wire] == ["secret", "secret"]  # type: ignore[index]
    assert [m["d"]["content"] for m in b.wire] == ["", ""]  # type: ignore[index]
    assert totals.intent_filtered == 2
