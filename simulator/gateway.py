"""The simulated gateway: the ``/gateway`` websocket and the :class:`~simulator.state.GatewayHub`.

:class:`Gateway` owns every connection and session. Events are routed as Discord routes them
(:mod:`simulator.routing`): to every live session whose ``(shard_id, shard_count)`` covers the
guild, else into the buffer of the newest resumable session that does, else they are lost. The
opcodes a client sends are handled in :mod:`simulator.opcodes`; this module holds the socket
lifecycle, the sessions' ends and resume windows, and faults.

The websocket answers on two paths: ``/gateway`` (what ``GET /gateway/bot`` names) and
``/gateway/resume``, READY's ``resume_gateway_url``, which a client "should use when it Resumes
after a disconnect" (``developers/events/gateway.mdx``, "Ready event" and "Preparing to Resume").
Both accept everything; a RESUME that arrives elsewhere is counted (``resumes_off_resume_url``).

When a socket ends, its session follows the close-code table (:mod:`simulator.close_codes`): a
server close with a fatal or "new session" code, or any close with 1000/1001, ends it; other
drops keep it resumable for ``--resume-ttl`` seconds (its resume window). A session that ends,
whether its window passed without a RESUME or a close or op 9 ended it, counts every dispatch it
never wrote to a socket as lost (:meth:`Session.close_books <simulator.sessions.Session.close_books>`);
a timer ends sessions when their window passes, and ``GET /_sim/stats`` ends any that are due first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .application import Application
from .close_codes import CLEAN_CLOSE_CODES, FATAL_CLOSE_CODES, ends_session
from .compression import SUPPORTED_COMPRESS, make_encoder
from .connection import Connection
from .identify import IdentifyLimiter, SessionStartBudget
from .opcodes import OpcodeHandler
from .routing import Router
from .sessions import Session, SessionTable, dumps

if TYPE_CHECKING:
    from .config import SimConfig
    from .state import Stats
    from .world import World

__all__ = ("Gateway", "FATAL_CLOSE_CODES", "FAULT_KINDS", "GATEWAY_PATH", "GATEWAY_RESUME_PATH")

_log = logging.getLogger(__name__)

GATEWAY_PATH = "/gateway"
#: READY's ``resume_gateway_url`` points here.
GATEWAY_RESUME_PATH = "/gateway/resume"
FAULT_KINDS = ("disconnect", "reconnect", "invalid_session", "silent", "outage")
#: Seconds a client gets to act on op 7 RECONNECT before the server closes the socket itself.
RECONNECT_GRACE = 5.0
#: Ended sessions whose books ``GET /_sim/stats`` still lists.
ENDED_SESSIONS_KEPT = 1000
#: The resume-window timer never fires sooner than this after it was armed (an injected clock may stand still).
_MIN_EXPIRY_DELAY = 0.05


class Gateway:
    """Every gateway connection and session of one simulator; implements ``GatewayHub``.

    Parameters
    ----------
    config:
        Limits, token, heartbeat interval, resume buffer and TTL.
    world:
        What READY and GUILD_CREATE describe.
    stats:
        The simulator's counters (shared with the REST side).
    clock:
        Monotonic seconds, for the identify limits and resume TTL; injectable for tests.
    application:
        The application's flags and token (shared with REST); built from ``config`` when not given.
    """

    def __init__(self, config: SimConfig, world: World, stats: Stats,
                 clock: Callable[[], float] = time.monotonic, application: Application | None = None) -> None:
        self.config = config
        self.world = world
        self.stats = stats
        self.clock = clock
        self.application = application if application is not None else Application.from_config(config)
        self.limiter = IdentifyLimiter(config.max_concurrency, config.identify_window, clock)
        self.budget = SessionStartBudget(config.session_start_total, clock=clock)
        self.sessions = SessionTable(config.resume_ttl, clock)
        self.router = Router(self.sessions, stats, world.application_id)
        #: Sessions that ended, newest last (their books, for ``GET /_sim/stats``).
        self.ended: deque[Session] = deque(maxlen=ENDED_SESSIONS_KEPT)
        self.connections: set[Connection] = set()
        #: The ``outage`` fault: until this time (the clock's), websocket upgrades are refused with 503.
        self.outage_until: float | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._ops = OpcodeHandler(self)

    # -- the websocket ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The ``GET /gateway`` (and ``GET /gateway/resume``) websocket handler."""
        if self.outage_until is not None:
            if self.clock() < self.outage_until:
                self.stats.outage_refusals += 1
                return web.json_response({"message": "503: Service Unavailable (simulated outage)", "code": 0},
                                         status=503)
            self.outage_until = None
        ws = web.WebSocketResponse(max_msg_size=1 << 20, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.json_response({"message": "400: Bad Request (expected a websocket upgrade)", "code": 0},
                                     status=400)
        await ws.prepare(request)
        problem = _check_query(request.query)
        compress = request.query.get("compress") if problem is None else None
        peer = request.remote or "?"
        encoder = make_encoder(compress)
        conn = Connection(ws, encoder, peer)
        conn.start()
        self.connections.add(conn)
        self._idle.clear()
        try:
            if problem is not None:
                _log.info("gateway connection from %s refused: %s", peer, problem[1])
                conn.close(*problem, keep_session=False)
            else:
                self.stats.connections_by_compress[encoder.name] += 1
                conn.send(dumps({"t": None, "s": None, "op": 10, "d": {
                    "heartbeat_interval": self.config.heartbeat_interval_ms, "_trace": ["[\"innkeeper-sim\"]"]}}))
                self._ops.arm_heartbeat(conn)
            via_resume = request.path.rstrip("/") == GATEWAY_RESUME_PATH
            await self._read_loop(conn, f"ws://{request.host}{GATEWAY_RESUME_PATH}", via_resume)
        except Exception:  # noqa: BLE001 - a broken client must never take the server down
            _log.exception("gateway connection from %s failed", peer)
        finally:
            self.connections.discard(conn)
            self._detach(conn)
            await conn.finish()
            self._settle(conn)
            if not self.connections:
                self._idle.set()
        return ws

    async def _read_loop(self, conn: Connection, resume_url: str, via_resume: bool) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                raw = msg.data
            elif msg.type is WSMsgType.BINARY:
                try:
                    raw = msg.data.decode()
                except UnicodeDecodeError:
                    conn.close(4002, "Error while decoding payload.")
                    continue
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            else:
                continue
            if conn.closing:
                continue
            self._ops.on_message(conn, raw, resume_url, via_resume)

    def _detach(self, conn: Connection) -> None:
        """The socket is gone: end or keep its session (the close-code table decides), count the close."""
        session = conn.session
        conn.session = None
        if conn.close_code is not None:  # the server closed it: Discord's table applies
            code = conn.close_code
            keep = conn.keep_session and not ends_session(code)
        else:  # the client closed it (or the TCP connection dropped): only 1000/1001 end the session
            code = conn.ws.close_code if conn.ws.close_code is not None else 1006
            keep = code not in CLEAN_CLOSE_CODES
        if session is None or session.conn is not conn:
            return
        session.conn = None
        session.stats.closes[code] += 1
        if keep and not session.invalidated:
            session.detached_at = self.clock()
            _log.info("shard %s/%s session %s detached (close %s); resumable for %.0fs", session.shard_id,
                      session.shard_count, session.session_id[:8], code, self.config.resume_ttl)
            self._arm_expiry()
        else:
            self.end_session(session, f"close {code}")
        self.routes_changed()

    def _settle(self, conn: Connection) -> None:
        """The socket's writer is done: its session lets go of it, and closes its books if it has ended meanwhile."""
        owner = conn.owner
        if owner is None or owner.last_conn is not conn:
            return
        owner.last_conn = None  # nothing more will be written; and ended sessions must not keep sockets alive
        if owner.ended_at is not None:
            owner.close_books()

    # -- sessions --------------------------------------------------------------------------------

    def end_session(self, session: Session, reason: str = "ended") -> None:
        """Invalidate a session for good (it can no longer be resumed) and count what it never delivered.

        The books close now, or once the session's last socket has written what it still had queued.
        """
        self.sessions.remove(session)
        self.routes_changed()
        if session.ended_at is not None:
            return
        session.invalidated = True
        session.ended_at = self.clock()
        session.end_reason = reason
        self.ended.append(session)
        conn = session.last_conn
        if conn is None or conn.done:
            lost = session.close_books()
            if lost:
                _log.info("shard %d/%d session %s ended (%s): %d buffered event(s) lost", session.shard_id,
                          session.shard_count, session.session_id[:8], reason, lost)

    def expire_sessions(self) -> int:
        """End every detached session whose resume window has passed; returns how many."""
        now, ttl = self.clock(), self.config.resume_ttl
        due = [s for s in self.sessions if s.conn is None and not s.resumable(now, ttl)]
        for session in due:
            self.stats.sessions_expired += 1
            self.end_session(session, "resume window ended")
        return len(due)

    def _arm_expiry(self) -> None:
        """(Re)arm the timer that ends sessions when the first resume window passes."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        when = self.sessions.next_expiry()
        if when is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests): GET /_sim/stats and the next IDENTIFY still expire them
            return
        delay = max(when - self.clock() + 0.001, _MIN_EXPIRY_DELAY)
        self._expiry = loop.call_later(delay, self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry = None
        self.expire_sessions()
        self._arm_expiry()

    def routes_changed(self) -> None:
        self.router.changed()

    def delivery_report(self) -> dict[str, Any]:
        """End the sessions that are due, then every session's books (see ``GatewayHub.delivery_report``)."""
        self.expire_sessions()
        now, ttl = self.clock(), self.config.resume_ttl
        current = list(self.sessions)
        pending = sum(s.undelivered for s in current if not s.writable)
        everyone = sorted((*self.ended, *current), key=lambda s: s.order)
        return {"resume_window_s": ttl, "pending": pending, "sessions": [s.report(now, ttl) for s in everyone]}

    # -- GatewayHub ------------------------------------------------------------------------------

    def dispatch_guild(self, guild_id: int, event: str, data: dict[str, Any]) -> bool:
        """Send a dispatch to every live session covering ``guild_id``, else the newest resumable one.

        False when nothing took it (counted in ``lost``) or every session's intents exclude the event
        (``intent_filtered``). Without MESSAGE_CONTENT a message's content fields go out empty, as on
        Discord. See :mod:`simulator.routing`.
        """
        return self.router.dispatch_guild(guild_id, event, data)

    def dispatch_guild_json(self, guild_id: int, event: str, d_json: str) -> bool:
        """:meth:`dispatch_guild` for a ``d`` that is already JSON text (load generators serialise once)."""
        return self.router.dispatch_guild_json(guild_id, event, d_json)

    def dispatch_shard(self, shard_id: int, event: str, data: dict[str, Any]) -> int:
        """Send a dispatch to every live session of ``shard_id`` (any shard count); returns how many took it.

        When none is live, the newest resumable session of that shard buffers it (and counts as one).
        Without a ``guild_id`` in ``data`` the event counts as a DM event for the intents check.
        """
        return self.router.dispatch_shard(shard_id, event, data)

    def apply_fault(self, kind: str, shard_id: int | None, *, resumable: bool = True, code: int = 4000,
                    seconds: float = 0.0) -> int:
        """Apply a gateway fault to every live session of ``shard_id`` (every live session when None).

        ``disconnect`` closes with ``code``; the session stays resumable unless ``resumable`` is
        False or the code ends sessions (fatal, "new session", 1000/1001: :mod:`simulator.close_codes`).
        ``reconnect`` sends op 7 (the client resumes).
        ``invalid_session`` sends op 9 with ``d=resumable``; when False the session is ended.
        ``silent`` keeps the socket open but writes nothing more to it: no dispatches (they wait in the
        session's buffer for a RESUME), no heartbeat ACKs; the client sees a zombie connection. It lasts
        until either side closes that socket; a new connection of the same session is healthy.
        ``outage`` closes every live socket with ``code`` (sessions stay resumable, as after any drop)
        and refuses every websocket upgrade with 503 for ``seconds`` (``shard_id`` is ignored).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown gateway fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if kind == "disconnect" and not (1000 <= code <= 4999):
            raise ValueError(f"close code {code} is outside 1000..4999")
        if kind == "outage":
            if not 0 < seconds <= 3600:
                raise ValueError("an outage needs 0 < seconds <= 3600")
            self.outage_until = self.clock() + seconds
            shard_id = None
        targets = self.sessions.live_for_shard(shard_id)
        for session in targets:
            conn = session.conn
            assert conn is not None
            if kind in ("disconnect", "outage"):
                conn.close(code, "simulated fault", keep_session=resumable and not ends_session(code))
            elif kind == "reconnect":
                conn.send('{"t":null,"s":null,"op":7,"d":null}')
                conn.set_timer("reconnect", RECONNECT_GRACE,
                               functools.partial(conn.close, 4000, "reconnect requested", keep_session=True))
            elif kind == "silent":
                conn.silence()
            else:
                conn.send('{"t":null,"s":null,"op":9,"d":%s}' % ("true" if resumable else "false"))
                if not resumable:
                    conn.session = None
                    session.conn = None
                    self.end_session(session, "op 9 d=false")
        self.stats.faults_applied += 1
        _log.info("gateway fault %s (shard=%s, resumable=%s, code=%s) hit %d session(s)", kind, shard_id,
                  resumable, code, len(targets))
        return len(targets)

    def terminate_sessions(self, code: int, reason: str) -> int:
        """Close every live session with ``code`` and end every session, live or resumable.

        Returns how many sessions ended. Used when the token is reset (4004, as a client with the
        old token would be told).
        """
        ended = 0
        for session in list(self.sessions):
            conn = session.conn
            if conn is not None:
                conn.close(code, reason, keep_session=False)
            self.end_session(session, f"close {code} ({reason})")
            ended += 1
        return ended

    def reset_token(self, token: str | None = None, *, why: str) -> str:
        """Reset the bot token and end every session (4004); returns the new token."""
        new = self.application.reset_token(token)
        self.stats.token_resets += 1
        ended = self.terminate_sessions(4004, "Authentication failed.")
        _log.warning("bot token reset (%s): %d session(s) terminated", why, ended)
        return new

    def close_disallowed_sessions(self) -> int:
        """Close 4014 (and end) every session that identified with an intent the application no longer has.

        discord.py warns that editing the limited intent flags "leads to the termination of the bot"
        (``AppInfo.edit``); the simulator ends exactly the sessions that use a removed intent.
        """
        ended = 0
        for session in list(self.sessions):
            if not self.application.disallowed(session.intents):
                continue
            conn = session.conn
            if conn is not None:
                self.stats.privileged_intent_closes += 1
                conn.close(4014, "Disallowed intent(s).", keep_session=False)
            self.end_session(session, "close 4014 (intents withdrawn)")
            ended += 1
        return ended

    def shard_count(self) -> int | None:
        """The shard count of the newest live session, or None when none is live."""
        live = self.sessions.live()
        if not live:
            return None
        return max(live, key=lambda s: s.order).shard_count

    def live_shards(self) -> dict[int, int]:
        """Shard id → number of live sessions."""
        return dict(sorted(Counter(s.shard_id for s in self.sessions.live()).items()))

    def identify_remaining(self) -> int:
        return self.budget.remaining()

    def identify_reset_after_ms(self) -> int:
        return self.budget.reset_after_ms()

    def set_identify_remaining(self, remaining: int | None) -> None:
        self.budget.set_remaining(remaining)

    async def close_all(self, timeout: float = 5.0) -> None:
        """Close every socket with 1001 (server shutdown) and wait for them to finish."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for conn in list(self.connections):
            conn.close(1001, "server shutting down", keep_session=False)
        if self.connections:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                _log.warning("%d gateway connection(s) did not close in %.0fs", len(self.connections), timeout)


def _check_query(query: Any) -> tuple[int, str] | None:
    """A close code and reason for an unusable ``?v=&encoding=&compress=``, or None."""
    version = query.get("v")
    if version not in ("9", "10"):
        return 4012, "Invalid API version (the simulator speaks v10 and v9)."
    encoding = query.get("encoding", "json")
    if encoding == "etf":
        return 4002, "ETF encoding is not supported by the simulator; use encoding=json."
    if encoding != "json":
        return 4002, f"Unknown encoding {encoding[:20]!r}."
    compress = query.get("compress")
    if compress not in SUPPORTED_COMPRESS:
        return 4002, f"Unknown compress {compress[:20]!r}; use zlib-stream or zstd-stream."
    return None
