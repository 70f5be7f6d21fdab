"""Gateway sessions: sequence numbers, the RESUME buffer, delivery accounting, and routing lookups.

A :class:`Session` outlives its socket. While attached to a writable socket (a :class:`SessionSocket`,
which :class:`~simulator.connection.Connection` implements) every dispatch is written to it; while it
has none (the socket dropped without a 1000/1001 close, or it went silent, or it is closing) the
dispatch is only buffered, and a RESUME within ``resume_ttl`` seconds of the drop replays everything
after the client's last sequence number, as on Discord.

Each session keeps its own books, so a benchmark can tell what the bot really received:

- ``dispatched``: dispatches handed to a writable socket as they happened;
- ``buffered``: dispatches that had no writable socket and waited in the buffer for a RESUME;
- ``replayed``: dispatches a RESUME sent again (everything after the client's ``seq``);
- ``lost``: once the session ends (its resume window passed without a RESUME, or a close or op 9
  ended it), every dispatch it never wrote to a socket, unless the same event went to another
  session's live socket (``LazyFrame.elsewhere``);
- ``written_seq``: the last sequence number a socket's writer really wrote (a dispatch queued to a
  socket that died before writing it is not delivered); ``acked_seq``: the last one the client
  reported (heartbeat ``d``, RESUME ``seq``).

A dispatch written to a socket in the instant before the client dies (read by nobody) cannot be told
from a received one, on Discord as here; ``acked_seq`` bounds it.

:class:`SessionTable` indexes sessions by ``(shard_count, shard_id)`` and answers the fallback routing
question: the newest live session, else the newest resumable one.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .frames import DispatchFrame, Frame, LazyFrame, LazyGuildCreate, dispatch_frame
from .jsontext import dumps

if TYPE_CHECKING:
    from .state import ShardStats, Stats
    from .world import World
    from .world_model import Guild

__all__ = ("Session", "SessionSocket", "SessionTable", "LazyFrame", "LazyGuildCreate", "DispatchFrame", "Frame",
           "dispatch_frame", "dumps")


class SessionSocket(Protocol):
    """The live socket a session is attached to (:class:`~simulator.connection.Connection` is the one).

    The session writes its dispatches to it; the gateway detaches it (``session``), closes it, silences
    it or arms a timer on it when it takes the session away or applies a fault. Its writer moves
    ``owner.written_seq`` forward as it writes the owner's dispatches.
    """

    #: The session attached to this socket, if any (the other side of :attr:`Session.conn`).
    session: Session | None
    #: The session this socket carried, kept after it was detached (the writer may still be flushing).
    owner: Session | None
    #: False once the socket is closing, closed or silenced: what is sent to it goes nowhere.
    writable: bool
    #: The ``silent`` fault: open, but nothing more is written.
    silent: bool
    #: True once the socket's writer has stopped for good.
    done: bool

    def send(self, frame: Frame) -> None:
        """Queue a frame for writing; never blocks."""
        ...

    def close(self, code: int, reason: str = "", *, keep_session: bool = True) -> None:
        """Close after everything queued so far."""
        ...

    def silence(self) -> None:
        """Keep the socket open but write nothing more to it (the ``silent`` fault)."""
        ...

    def set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        """(Re)arm a named timer that ends with the socket."""
        ...


class Session:
    """One gateway session of one shard, and its delivery books (see the module).

    Parameters
    ----------
    shard_id, shard_count:
        From IDENTIFY's ``shard``.
    buffer_size:
        Dispatches kept for RESUME.
    stats, totals:
        The shard's and the simulator's counters (``dispatched``, ``buffered``, ``replayed``, ``lost``
        are bumped here too).
    order:
        Creation order; the newest session of a shard is the fallback target when none is live.
    """

    __slots__ = ("session_id", "shard_id", "shard_count", "intents", "large_threshold", "seq", "buffer", "conn",
                 "last_conn", "detached_at", "invalidated", "stats", "totals", "order", "created", "written_seq",
                 "acked_seq", "dispatched", "buffered", "replayed", "lost", "resumes", "ended_at", "end_reason",
                 "books_closed")

    def __init__(self, shard_id: int, shard_count: int, intents: int, buffer_size: int, stats: ShardStats,
                 totals: Stats, order: int, large_threshold: int = 250) -> None:
        self.session_id = secrets.token_hex(16)
        self.shard_id = shard_id
        self.shard_count = shard_count
        self.intents = intents
        #: IDENTIFY's ``large_threshold`` (50–250): which guilds' GUILD_CREATEs leave offline members out.
        self.large_threshold = large_threshold
        self.seq = 0
        self.buffer: deque[LazyFrame] = deque(maxlen=buffer_size)
        self.conn: SessionSocket | None = None
        #: The socket most recently attached (kept after a detach: its writer may still be flushing).
        self.last_conn: SessionSocket | None = None
        self.detached_at: float | None = None
        #: True once the session can no longer be resumed (closed 1000/1001, op 9 false, fatal close, expired).
        self.invalidated = False
        self.stats = stats
        self.totals = totals
        self.order = order
        self.created = time.monotonic()
        #: The last sequence number a socket's writer wrote; the one the client last reported.
        self.written_seq = 0
        self.acked_seq = 0
        self.dispatched = 0
        self.buffered = 0
        self.replayed = 0
        self.lost = 0
        self.resumes = 0
        #: When and why the session ended (None while it is live or resumable).
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.books_closed = False

    def __repr__(self) -> str:
        state = "live" if self.conn is not None else ("ended" if self.invalidated else "detached")
        return f"<Session {self.session_id[:8]} shard={self.shard_id}/{self.shard_count} seq={self.seq} {state}>"

    @property
    def live(self) -> bool:
        """A socket is attached (it may be silent or closing)."""
        return self.conn is not None

    @property
    def writable(self) -> bool:
        """A socket is attached and what is sent to it is written."""
        conn = self.conn
        return conn is not None and conn.writable

    def resumable(self, now: float, ttl: float) -> bool:
        """Whether a RESUME of this session can succeed now (within ``ttl`` seconds of the drop)."""
        if self.invalidated:
            return False
        return self.detached_at is None or now - self.detached_at <= ttl

    def attach(self, conn: SessionSocket) -> None:
        """Attach the session to ``conn`` (after IDENTIFY or RESUME)."""
        self.conn = self.last_conn = conn
        self.detached_at = None
        conn.session = conn.owner = self

    def acknowledge(self, seq: object) -> None:
        """The client says it received everything up to ``seq`` (heartbeat ``d`` or RESUME ``seq``)."""
        if type(seq) is int and self.acked_seq < seq <= self.seq:
            self.acked_seq = seq

    def push(self, event: str, d_json: str, elsewhere: bool = False) -> bool:
        """Give the next sequence number to a dispatch, buffer it and write it if a writable socket is attached.

        ``elsewhere``: the same event went to another session's writable socket. Returns whether it
        went to a writable socket.
        """
        self.seq = seq = self.seq + 1
        return self._write(DispatchFrame(seq, dispatch_frame(seq, event, d_json), elsewhere))

    def push_lazy(self, make: Callable[[int], LazyFrame]) -> bool:
        """Like :meth:`push` for a frame rendered when written: ``make(seq)`` builds it."""
        self.seq = seq = self.seq + 1
        return self._write(make(seq))

    def _write(self, frame: LazyFrame) -> bool:
        """Buffer the frame for RESUME and write it if a writable socket is attached."""
        self.buffer.append(frame)
        conn = self.conn
        if conn is None or not conn.writable:
            self.buffered += 1
            self.stats.buffered += 1
            self.totals.buffered += 1
            return False
        conn.send(frame)
        self.dispatched += 1
        self.stats.dispatched += 1
        self.totals.dispatched += 1
        return True

    def push_guild_creates(self, guilds: list[Guild], world: World) -> None:
        """Queue one lazy GUILD_CREATE per guild (rendered when written, for this session's intents)."""
        conn = self.conn if self.writable else None
        buffer = self.buffer
        intents, threshold = self.intents, self.large_threshold
        for guild in guilds:
            self.seq = seq = self.seq + 1
            item = LazyGuildCreate(seq, guild, world, intents, threshold)
            buffer.append(item)
            if conn is not None:
                conn.send(item)
        n = len(guilds)
        if conn is not None:
            self.dispatched += n
            self.stats.dispatched += n
            self.totals.dispatched += n
        else:
            self.buffered += n
            self.stats.buffered += n
            self.totals.buffered += n

    def replay_after(self, seq: int) -> list[LazyFrame] | None:
        """The buffered dispatches after ``seq``; None when some of them are gone from the buffer."""
        if seq > self.seq or seq < 0:
            return None
        if seq == self.seq:
            return []
        if not self.buffer or self.buffer[0].seq > seq + 1:
            return None
        return [frame for frame in self.buffer if frame.seq > seq]

    def count_replayed(self, n: int) -> None:
        """``n`` dispatches were sent again by a RESUME (they also count in the shard's ``dispatched``)."""
        self.replayed += n
        self.resumes += 1
        self.stats.replayed += n
        self.totals.replayed += n
        self.stats.dispatched += n
        self.totals.dispatched += n

    @property
    def undelivered(self) -> int:
        """Dispatches not written to any socket yet (queued, buffered, or lost once the session ended)."""
        return self.seq - self.written_seq

    def close_books(self) -> int:
        """Count what the ended session never wrote as lost (once); frees the buffer. Returns the count."""
        if self.books_closed:
            return 0
        self.books_closed = True
        written = self.written_seq
        missing = self.seq - written
        if missing > 0:
            missing -= sum(1 for f in self.buffer if f.elsewhere and f.seq > written)
        lost = max(missing, 0)
        self.buffer.clear()
        self.lost += lost
        self.stats.lost += lost
        self.totals.lost += lost
        self.totals.lost_buffered += lost
        return lost

    def state(self, now: float, ttl: float) -> str:
        """``live``, ``silent``, ``closing``, ``resumable`` or ``ended``."""
        conn = self.conn
        if self.ended_at is not None or self.invalidated:
            return "ended"
        if conn is None:
            return "resumable" if self.resumable(now, ttl) else "ended"
        if conn.writable:
            return "live"
        return "silent" if conn.silent else "closing"

    def report(self, now: float, ttl: float) -> dict[str, Any]:
        """This session's books, as ``GET /_sim/stats`` lists them under ``sessions``."""
        state = self.state(now, ttl)
        resumable_for = (round(max(0.0, ttl - (now - self.detached_at)), 3)
                         if state == "resumable" and self.detached_at is not None else None)
        return {
            "session_id": self.session_id, "shard_id": self.shard_id, "shard_count": self.shard_count,
            "state": state, "seq": self.seq, "written_seq": self.written_seq, "acked_seq": self.acked_seq,
            "dispatched": self.dispatched, "buffered": self.buffered, "replayed": self.replayed, "lost": self.lost,
            "undelivered": 0 if self.books_closed else self.undelivered, "resumes": self.resumes,
            "resumable_for_s": resumable_for, "end_reason": self.end_reason,
        }


class SessionTable:
    """Every session by id and by ``(shard_count, shard_id)``, oldest first."""

    __slots__ = ("by_id", "_by_shard", "_order", "ttl", "_clock")

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.by_id: dict[str, Session] = {}
        self._by_shard: dict[tuple[int, int], list[Session]] = {}
        self._order = 0
        self.ttl = ttl
        self._clock = clock

    def next_order(self) -> int:
        self._order += 1
        return self._order

    def add(self, session: Session) -> None:
        self.by_id[session.session_id] = session
        self._by_shard.setdefault((session.shard_count, session.shard_id), []).append(session)

    def remove(self, session: Session) -> None:
        self.by_id.pop(session.session_id, None)
        key = (session.shard_count, session.shard_id)
        group = self._by_shard.get(key)
        if group is not None:
            try:
                group.remove(session)
            except ValueError:
                pass
            if not group:
                del self._by_shard[key]

    def get(self, session_id: str) -> Session | None:
        return self.by_id.get(session_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.by_id.values()))

    def __len__(self) -> int:
        return len(self.by_id)

    def expired(self, session: Session) -> bool:
        """Whether a detached session is past resuming (or invalidated)."""
        return session.conn is None and not session.resumable(self._clock(), self.ttl)

    def sweep(self) -> list[Session]:
        """Drop every session that is neither live nor resumable; returns them."""
        gone = [s for s in self.by_id.values() if self.expired(s)]
        for s in gone:
            self.remove(s)
        return gone

    def target(self, shard_count: int, shard_id: int) -> Session | None:
        """The session that gets the shard's events: the newest live one, else the newest resumable one."""
        group = self._by_shard.get((shard_count, shard_id))
        if not group:
            return None
        for s in reversed(group):
            if s.conn is not None:
                return s
        for s in reversed(group):
            if not self.expired(s):
                return s
        return None

    def live(self) -> list[Session]:
        return [s for s in self.by_id.values() if s.conn is not None]

    def live_for_shard(self, shard_id: int | None) -> list[Session]:
        """Live sessions of ``shard_id`` (any shard count), or every live session when None."""
        return [s for s in self.by_id.values() if s.conn is not None and (shard_id is None or s.shard_id == shard_id)]

    def live_routes(self) -> list[tuple[int, dict[int, list[Session]]]]:
        """Live sessions by shard count, then by shard id (oldest first): every one of them gets its shard's events."""
        by_count: dict[int, dict[int, list[Session]]] = {}
        for s in sorted(self.live(), key=lambda s: s.order):
            by_count.setdefault(s.shard_count, {}).setdefault(s.shard_id, []).append(s)
        return list(by_count.items())

    def counts_newest_first(self) -> list[int]:
        """Shard counts of the live and resumable sessions, the newest session's first."""
        counts: list[int] = []
        for s in sorted(self.by_id.values(), key=lambda s: s.order, reverse=True):
            if s.shard_count not in counts and not self.expired(s):
                counts.append(s.shard_count)
        return counts

    def next_expiry(self) -> float | None:
        """When (on the table's clock) the first detached session's resume window ends, or None."""
        ends = [s.detached_at + self.ttl for s in self.by_id.values()
                if s.conn is None and s.detached_at is not None and not s.invalidated]
        return min(ends, default=None)
