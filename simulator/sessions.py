"""Gateway sessions: sequence numbers, the RESUME buffer, and which session gets a shard's events.

A :class:`Session` outlives its socket. While attached to a live socket (a :class:`SessionSocket`,
which :class:`~simulator.connection.Connection` implements) every dispatch is written to it; when the
socket drops without a 1000/1001 close the session stays resumable for ``resume_ttl`` seconds and
keeps buffering the dispatches meant for its shard, so a RESUME replays everything after the
client's last sequence number, as on Discord.

:class:`SessionTable` indexes sessions by ``(shard_count, shard_id)`` and answers the routing
question: the newest live session, else the newest resumable one.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from .jsontext import dumps

if TYPE_CHECKING:
    from .state import ShardStats, Stats
    from .world import World
    from .world_model import Guild

__all__ = ("Session", "SessionSocket", "SessionTable", "LazyFrame", "LazyGuildCreate", "Frame", "dispatch_frame",
           "dumps")

_QUOTED: dict[str, str] = {}


def _quote(event: str) -> str:
    quoted = _QUOTED.get(event)
    if quoted is None:
        quoted = _QUOTED[event] = dumps(event)
    return quoted


def dispatch_frame(seq: int, event: str, d_json: str) -> str:
    """An op 0 DISPATCH message around an already serialised ``d``."""
    return f'{{"t":{_quote(event)},"s":{seq},"op":0,"d":{d_json}}}'


class LazyFrame:
    """A dispatch rendered only when a socket writes it, so queues and RESUME buffers of big guilds stay small."""

    __slots__ = ("seq",)

    seq: int

    def render(self) -> str:
        """The whole op 0 message as JSON text."""
        raise NotImplementedError


class LazyGuildCreate(LazyFrame):
    """A GUILD_CREATE for a session with these intents and ``large_threshold``."""

    __slots__ = ("guild", "world", "intents", "large_threshold")

    def __init__(self, seq: int, guild: Guild, world: World, intents: int = (1 << 26) - 1,
                 large_threshold: int = 250) -> None:
        self.seq = seq
        self.guild = guild
        self.world = world
        self.intents = intents
        self.large_threshold = large_threshold

    def render(self) -> str:
        return dispatch_frame(self.seq, "GUILD_CREATE",
                              self.world.guild_create_json(self.guild, self.intents, self.large_threshold))


#: What a connection's queue and a session's buffer hold: a ready message or a lazy one.
Frame = str | LazyFrame


class SessionSocket(Protocol):
    """The live socket a session is attached to (:class:`~simulator.connection.Connection` is the one).

    The session writes its dispatches to it; the gateway detaches it (``session``), closes it or arms a
    timer on it when it takes the session away or applies a fault.
    """

    #: The session attached to this socket, if any (the other side of :attr:`Session.conn`).
    session: Session | None

    def send(self, frame: Frame) -> None:
        """Queue a frame for writing; never blocks."""
        ...

    def close(self, code: int, reason: str = "", *, keep_session: bool = True) -> None:
        """Close after everything queued so far."""
        ...

    def set_timer(self, name: str, delay: float, callback: Callable[[], object]) -> None:
        """(Re)arm a named timer that ends with the socket."""
        ...


class Session:
    """One gateway session of one shard.

    Parameters
    ----------
    shard_id, shard_count:
        From IDENTIFY's ``shard``.
    buffer_size:
        Dispatches kept for RESUME.
    stats, totals:
        The shard's and the simulator's counters (``dispatched`` is bumped here).
    order:
        Creation order; the newest session of a shard gets its events.
    """

    __slots__ = ("session_id", "shard_id", "shard_count", "intents", "large_threshold", "seq", "buffer", "conn",
                 "detached_at", "invalidated", "stats", "totals", "order", "created")

    def __init__(self, shard_id: int, shard_count: int, intents: int, buffer_size: int, stats: ShardStats,
                 totals: Stats, order: int, large_threshold: int = 250) -> None:
        self.session_id = secrets.token_hex(16)
        self.shard_id = shard_id
        self.shard_count = shard_count
        self.intents = intents
        #: IDENTIFY's ``large_threshold`` (50–250): which guilds' GUILD_CREATEs leave offline members out.
        self.large_threshold = large_threshold
        self.seq = 0
        self.buffer: deque[tuple[int, Frame]] = deque(maxlen=buffer_size)
        self.conn: SessionSocket | None = None
        self.detached_at: float | None = None
        #: True once the session can no longer be resumed (closed 1000/1001, op 9 false, fatal close).
        self.invalidated = False
        self.stats = stats
        self.totals = totals
        self.order = order
        self.created = time.monotonic()

    def __repr__(self) -> str:
        state = "live" if self.conn is not None else ("ended" if self.invalidated else "detached")
        return f"<Session {self.session_id[:8]} shard={self.shard_id}/{self.shard_count} seq={self.seq} {state}>"

    @property
    def live(self) -> bool:
        return self.conn is not None

    def resumable(self, now: float, ttl: float) -> bool:
        """Whether a RESUME of this session can succeed now."""
        if self.invalidated:
            return False
        return self.detached_at is None or now - self.detached_at <= ttl

    def push(self, event: str, d_json: str) -> bool:
        """Give the next sequence number to a dispatch, buffer it and write it if a socket is attached.

        Returns whether it went to a live socket.
        """
        self.seq = seq = self.seq + 1
        return self._write(seq, dispatch_frame(seq, event, d_json))

    def push_lazy(self, make: Callable[[int], LazyFrame]) -> bool:
        """Like :meth:`push` for a frame rendered when written: ``make(seq)`` builds it."""
        self.seq = seq = self.seq + 1
        return self._write(seq, make(seq))

    def _write(self, seq: int, frame: Frame) -> bool:
        """Buffer the frame for RESUME and write it if a socket is attached."""
        self.buffer.append((seq, frame))
        conn = self.conn
        if conn is None:
            return False
        conn.send(frame)
        self.stats.dispatched += 1
        self.totals.dispatched += 1
        return True

    def push_guild_creates(self, guilds: list[Guild], world: World) -> None:
        """Queue one lazy GUILD_CREATE per guild (rendered when written, for this session's intents)."""
        conn = self.conn
        buffer = self.buffer
        intents, threshold = self.intents, self.large_threshold
        for guild in guilds:
            self.seq = seq = self.seq + 1
            item = LazyGuildCreate(seq, guild, world, intents, threshold)
            buffer.append((seq, item))
            if conn is not None:
                conn.send(item)
        if conn is not None:
            self.stats.dispatched += len(guilds)
            self.totals.dispatched += len(guilds)

    def replay_after(self, seq: int) -> list[Frame] | None:
        """The buffered dispatches after ``seq``; None when some of them are gone from the buffer."""
        if seq > self.seq or seq < 0:
            return None
        if seq == self.seq:
            return []
        if not self.buffer or self.buffer[0][0] > seq + 1:
            return None
        return [frame for s, frame in self.buffer if s > seq]


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

    def counts_newest_first(self) -> list[int]:
        """Shard counts of live sessions, the newest session's first; resumable ones when none is live."""
        pool = self.live() or [s for s in self.by_id.values() if not self.expired(s)]
        counts: list[int] = []
        for s in sorted(pool, key=lambda s: s.order, reverse=True):
            if s.shard_count not in counts:
                counts.append(s.shard_count)
        return counts
