"""What the gateway does with each payload a client sends (op 1, 2, 3, 4, 6, 8, 31).

Discord's rules, as the simulator enforces them:

- a payload over 4096 bytes or that is not a JSON object → close 4002; an unknown opcode → 4001;
- more than ``gateway_send_limit`` payloads per ``gateway_send_window`` seconds → close 4008;
- anything but HEARTBEAT, IDENTIFY and RESUME before a session exists → close 4003; a second
  IDENTIFY or RESUME on a connection with a session → 4005;
- IDENTIFY: bad token → 4004, bad ``shard`` → 4010, too many guilds for one shard → 4011, missing
  or unknown ``intents`` → 4013; a second IDENTIFY of a bucket (``shard_id % max_concurrency``)
  inside the identify window → op 9 INVALID_SESSION ``false`` and no session;
- RESUME of an unknown, ended or expired session, or from a sequence the buffer no longer holds →
  op 9 ``false``; otherwise the missed dispatches, then RESUMED;
- no heartbeat for 1.5 heartbeat intervals → close 4009 (the session stays resumable).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .member_requests import MemberRequests
from .sessions import Session, SessionTable, dumps

if TYPE_CHECKING:
    from .config import SimConfig
    from .connection import Connection
    from .identify import IdentifyLimiter, SessionStartBudget
    from .state import Stats
    from .world import World

__all__ = ("OpcodeHandler", "GatewayCore", "VALID_INTENTS", "MAX_PAYLOAD_BYTES")

_log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 4096
#: The largest shard count IDENTIFY accepts (close 4010 above).
MAX_SHARDS = 65_536
#: Every intent bit Discord defines (0–16, 20, 21, 24, 25).
VALID_INTENTS = sum(1 << b for b in (*range(17), 20, 21, 24, 25))
#: Heartbeat timeout as a multiple of the interval.
HEARTBEAT_GRACE = 1.5

_ACK = '{"t":null,"s":null,"op":11,"d":null}'
_INVALID_SESSION_FALSE = '{"t":null,"s":null,"op":9,"d":false}'


def _is_int(value: object) -> bool:
    return type(value) is int


def _snowflake(value: object) -> int | None:
    if type(value) is int and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 21:
        return int(value)
    return None


class GatewayCore(Protocol):
    """What the opcode handler uses of its gateway (:class:`~simulator.gateway.Gateway`).

    Its configuration, world and counters, the identify limits, the session table, and the two
    notifications a new or ended session owes the gateway's routing.
    """

    config: SimConfig
    world: World
    stats: Stats
    clock: Callable[[], float]
    limiter: IdentifyLimiter
    budget: SessionStartBudget
    sessions: SessionTable

    def routes_changed(self) -> None: ...

    def end_session(self, session: Session) -> None: ...


class OpcodeHandler:
    """The per-payload logic of a :class:`~simulator.gateway.Gateway`."""

    __slots__ = ("gw", "config", "world", "stats", "members")

    def __init__(self, gateway: GatewayCore) -> None:
        self.gw = gateway
        self.config = gateway.config
        self.world = gateway.world
        self.stats = gateway.stats
        #: Op 8 REQUEST_GUILD_MEMBERS, with the bot-wide whole-list rate limit.
        self.members = MemberRequests(gateway.world, gateway.stats, gateway.config.member_request_interval,
                                      gateway.clock)

    # -- entry -----------------------------------------------------------------------------------

    def on_message(self, conn: Connection, raw: str, resume_url: str) -> None:
        """Handle one text payload from the client."""
        if len(raw) > MAX_PAYLOAD_BYTES // 4 and len(raw.encode()) > MAX_PAYLOAD_BYTES:
            conn.close(4002, "Payload too large (4096 bytes at most).")
            return
        now = self.gw.clock()
        received = conn.received
        received.append(now)
        window = self.config.gateway_send_window
        while received and now - received[0] >= window:
            received.popleft()
        if len(received) > self.config.gateway_send_limit:
            self.stats.send_limit_closes += 1
            _log.info("gateway client %s sent more than %d payloads in %.0fs: close 4008", conn.peer,
                      self.config.gateway_send_limit, window)
            conn.close(4008, "Rate limited.")
            return
        try:
            payload = json.loads(raw)
        except ValueError:
            conn.close(4002, "Error while decoding payload.")
            return
        if not isinstance(payload, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:
            self._heartbeat(conn, data)
        elif op == 2:
            self._identify(conn, data, resume_url)
        elif op == 6:
            self._resume(conn, data)
        elif op in (3, 4, 8, 31):
            if conn.session is None:
                conn.close(4003, "Not authenticated.")
            elif op == 8:
                self.members.handle(conn, conn.session, data)
            elif op == 31:
                self._request_soundboard(conn, conn.session, data)
            elif not isinstance(data, dict):
                conn.close(4002, "Error while decoding payload.")
            # op 3 PRESENCE_UPDATE and op 4 VOICE_STATE_UPDATE are accepted without effect.
        else:
            conn.close(4001, "Unknown opcode." if _is_int(op) else "Invalid opcode.")

    # -- heartbeat -------------------------------------------------------------------------------

    def arm_heartbeat(self, conn: Connection) -> None:
        """Close the connection (4009, resumable) when heartbeats stop."""
        timeout = self.config.heartbeat_interval_ms / 1000 * HEARTBEAT_GRACE

        def check() -> None:
            idle = self.gw.clock() - conn.last_heartbeat
            if idle >= timeout:
                _log.info("gateway client %s sent no heartbeat for %.1fs: close 4009", conn.peer, idle)
                conn.close(4009, "Session timed out.", keep_session=True)
            else:
                conn.set_timer("heartbeat", timeout - idle, check)

        conn.last_heartbeat = self.gw.clock()
        conn.set_timer("heartbeat", timeout, check)

    def _heartbeat(self, conn: Connection, data: object) -> None:
        if data is not None and not _is_int(data):
            conn.close(4002, "Error while decoding payload.")
            return
        conn.last_heartbeat = self.gw.clock()
        self.stats.heartbeats += 1
        conn.send(_ACK)

    # -- identify --------------------------------------------------------------------------------

    def _identify(self, conn: Connection, d: object, resume_url: str) -> None:
        gw, cfg, stats = self.gw, self.config, self.stats
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        if d.get("token") != cfg.token:
            stats.auth_failures += 1
            _log.info("gateway IDENTIFY from %s with a bad token: close 4004", conn.peer)
            conn.close(4004, "Authentication failed.", keep_session=False)
            return
        props = d.get("properties")
        if not isinstance(props, dict) or not all(isinstance(props.get(k, ""), str) for k in ("os", "browser",
                                                                                              "device")):
            conn.close(4002, "Error while decoding payload (properties).")
            return
        threshold = d.get("large_threshold", 50)
        if not _is_int(threshold) or not 50 <= threshold <= 250:
            conn.close(4002, "Error while decoding payload (large_threshold must be 50..250).")
            return
        shard = d.get("shard", [0, 1])
        if (not isinstance(shard, list) or len(shard) != 2 or not all(_is_int(x) for x in shard)
                or not 1 <= shard[1] <= MAX_SHARDS or not 0 <= shard[0] < shard[1]):
            conn.close(4010, "Invalid shard.", keep_session=False)
            return
        shard_id, shard_count = shard
        intents = d.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0 or intents & ~VALID_INTENTS:
            conn.close(4013, "Invalid intent(s).", keep_session=False)
            return
        guilds = self.world.guilds_for_shard(shard_id, shard_count)
        if len(guilds) > cfg.max_guilds_per_shard:
            stats.sharding_required_closes += 1
            _log.info("shard %d/%d would carry %d guilds (> %d): close 4011", shard_id, shard_count, len(guilds),
                      cfg.max_guilds_per_shard)
            conn.close(4011, "Sharding required.", keep_session=False)
            return
        if not gw.limiter.try_acquire(shard_id):
            stats.identify_violations += 1
            _log.info("shard %d IDENTIFY inside bucket %d's window (%.2fs left): op 9", shard_id,
                      gw.limiter.bucket(shard_id), gw.limiter.retry_after(shard_id))
            conn.send(_INVALID_SESSION_FALSE)
            return
        if not gw.budget.try_use():
            stats.identify_budget_exhausted += 1
            _log.warning("daily IDENTIFY budget (%d) used up: close 4004", cfg.session_start_total)
            conn.close(4004, "Authentication failed (session start limit reached).", keep_session=False)
            return
        gw.sessions.sweep()
        shard_stats = stats.shards[shard_id]
        session = Session(shard_id, shard_count, intents, cfg.resume_buffer, shard_stats, stats,
                          gw.sessions.next_order(), threshold)
        gw.sessions.add(session)
        session.conn = conn
        conn.session = session
        gw.routes_changed()
        stats.identifies += 1
        shard_stats.identifies += 1
        shard_stats.sessions += 1
        shard_stats.guilds = len(guilds)
        live_counts = {s.shard_count for s in gw.sessions.live()}
        if len(live_counts) > 1:
            _log.info("sessions with shard counts %s overlap (resharding)", sorted(live_counts))
        world = self.world
        ready = {
            "v": 10, "user": world.bot_user(), "guilds": world.ready_guilds(shard_id, shard_count),
            "session_id": session.session_id, "resume_gateway_url": resume_url, "shard": [shard_id, shard_count],
            "application": world.application, "private_channels": [], "relationships": [], "presences": [],
            "guild_join_requests": [], "user_settings": {}, "session_type": "normal", "auth": {},
            "geo_ordered_rtc_regions": ["us-east", "us-central"], "_trace": ['["innkeeper-sim",{"micros":0}]'],
        }
        session.push("READY", dumps(ready))
        session.push_guild_creates(guilds, world)
        _log.info("shard %d/%d identified (session %s, %d guilds)", shard_id, shard_count, session.session_id[:8],
                  len(guilds))

    # -- resume ----------------------------------------------------------------------------------

    def _resume(self, conn: Connection, d: object) -> None:
        gw, stats = self.gw, self.stats
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(d, dict) or not isinstance(d.get("session_id"), str) or not (
                d.get("seq") is None or _is_int(d.get("seq"))):
            conn.close(4002, "Error while decoding payload.")
            return
        if d.get("token") != self.config.token:
            stats.auth_failures += 1
            conn.close(4004, "Authentication failed.", keep_session=False)
            return
        session = gw.sessions.get(d["session_id"])
        seq = d.get("seq") or 0
        frames = None
        if session is not None and session.resumable(gw.clock(), self.config.resume_ttl):
            frames = session.replay_after(seq)
        if session is None or frames is None:
            stats.failed_resumes += 1
            if session is not None and session.conn is None:
                gw.end_session(session)
            _log.info("RESUME of session %s at seq %s refused: op 9", str(d["session_id"])[:8], seq)
            conn.send(_INVALID_SESSION_FALSE)
            return
        old = session.conn
        if old is not None:
            # A new socket took the session over; the old one (a zombie) is closed without touching it.
            old.session = None
            old.close(4000, "Session resumed on another connection.")
        session.conn = conn
        session.detached_at = None
        conn.session = session
        gw.routes_changed()
        for frame in frames:
            conn.send(frame)
        session.stats.dispatched += len(frames)
        stats.dispatched += len(frames)
        session.push("RESUMED", '{"_trace":["[\\"innkeeper-sim\\"]"]}')
        stats.resumes += 1
        session.stats.resumes += 1
        _log.info("shard %d/%d resumed session %s from seq %d (%d replayed)", session.shard_id,
                  session.shard_count, session.session_id[:8], seq, len(frames))

    # -- member chunking and soundboard ----------------------------------------------------------

    def _guild_ids(self, conn: Connection, session: Session, raw: object) -> list[int] | None:
        values = raw if isinstance(raw, list) else [raw]
        ids = [_snowflake(v) for v in values]
        if not ids or any(i is None for i in ids):
            conn.close(4002, "Error while decoding payload (guild_id).")
            return None
        out = []
        for gid in ids:
            assert gid is not None
            if self.world.guild(gid) is None or (gid >> 22) % session.shard_count != session.shard_id:
                _log.debug("shard %d asked about guild %s it does not carry; ignored", session.shard_id, gid)
                continue
            out.append(gid)
        return out

    def _request_soundboard(self, conn: Connection, session: Session, d: object) -> None:
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        guild_ids = self._guild_ids(conn, session, d.get("guild_ids"))
        for gid in guild_ids or ():
            session.push("SOUNDBOARD_SOUNDS", dumps({"guild_id": str(gid), "soundboard_sounds": []}))
