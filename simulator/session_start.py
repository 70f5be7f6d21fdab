"""The two opcodes that attach a session to a connection: op 2 IDENTIFY and op 6 RESUME.

Discord's rules, as the simulator enforces them:

- IDENTIFY: bad token → 4004, bad ``shard`` → 4010, too many guilds for one shard → 4011, missing
  or unknown ``intents`` → 4013, a privileged intent the application's flags do not grant → 4014
  (``developers/events/gateway.mdx``, "Privileged Intents" → "Gateway Restrictions": "If you pass a
  privileged intent in the ``intents`` parameter without configuring it in your app's settings …
  your Gateway connection will be closed with a ``4014`` close code"; MESSAGE_CONTENT is one of the
  privileged intents listed there). A second IDENTIFY of a bucket (``shard_id % max_concurrency``)
  inside the identify window → op 9 INVALID_SESSION ``false`` and no session. An IDENTIFY that
  finds the daily budget used up → 4004, and the token is reset and every session of the bot ends
  (``gateway.mdx``, "Identifying": "Upon hitting this limit, all active sessions for the app will
  be terminated, the bot token will be reset"); a reset token is what 4004 Authentication failed
  says (``opcodes-and-status-codes.mdx``).
- RESUME of an unknown, ended or expired session → op 9 ``false`` (``gateway.mdx``, "Resuming": "It's
  possible your app won't reconnect in time to Resume"); a session can be resumed only within its
  resume window, ``--resume-ttl`` seconds after its socket dropped. With a ``seq`` the session never
  sent, or one its buffer no longer holds → close 4007 Invalid ``seq``, and the session ends
  ("Reconnect and start a new session"); otherwise the missed dispatches (counted ``replayed``),
  then RESUMED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .fields import is_int
from .sessions import Session, SessionTable, dumps

if TYPE_CHECKING:
    from .application import Application
    from .config import SimConfig
    from .connection import Connection
    from .identify import IdentifyLimiter, SessionStartBudget
    from .state import Stats
    from .world import World

__all__ = ("GatewayCore", "identify", "resume", "VALID_INTENTS", "MAX_SHARDS", "INVALID_SESSION_FALSE")

_log = logging.getLogger(__name__)

#: The largest shard count IDENTIFY accepts (close 4010 above).
MAX_SHARDS = 65_536
#: Every intent bit Discord defines (0–16, 20, 21, 24, 25).
VALID_INTENTS = sum(1 << b for b in (*range(17), 20, 21, 24, 25))
INVALID_SESSION_FALSE = '{"t":null,"s":null,"op":9,"d":false}'



class GatewayCore(Protocol):
    """What the opcode handlers use of their gateway (:class:`~simulator.gateway.Gateway`).

    Its configuration, world and counters, the identify limits, the session table, the application
    (flags and token), the two notifications a new or ended session owes the gateway's routing, and
    the token reset an exhausted identify budget causes.
    """

    config: SimConfig
    world: World
    stats: Stats
    clock: Callable[[], float]
    limiter: IdentifyLimiter
    budget: SessionStartBudget
    sessions: SessionTable
    application: Application

    def routes_changed(self) -> None: ...

    def end_session(self, session: Session, reason: str = "ended") -> None: ...

    def expire_sessions(self) -> int: ...

    def reset_token(self, token: str | None = None, *, why: str) -> str: ...


def identify(gw: GatewayCore, conn: Connection, d: object, resume_url: str) -> None:
    """Handle op 2 IDENTIFY (see the module for what is refused and how)."""
    cfg, stats = gw.config, gw.stats
    if conn.session is not None:
        conn.close(4005, "Already authenticated.")
        return
    if not isinstance(d, dict):
        conn.close(4002, "Error while decoding payload.")
        return
    if d.get("token") != gw.application.token:
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
    if not is_int(threshold) or not 50 <= threshold <= 250:
        conn.close(4002, "Error while decoding payload (large_threshold must be 50..250).")
        return
    shard = d.get("shard", [0, 1])
    if (not isinstance(shard, list) or len(shard) != 2 or not all(is_int(x) for x in shard)
            or not 1 <= shard[1] <= MAX_SHARDS or not 0 <= shard[0] < shard[1]):
        conn.close(4010, "Invalid shard.", keep_session=False)
        return
    shard_id, shard_count = shard
    intents = d.get("intents")
    if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0 or intents & ~VALID_INTENTS:
        conn.close(4013, "Invalid intent(s).", keep_session=False)
        return
    denied = gw.application.disallowed(intents)
    if denied:
        stats.privileged_intent_closes += 1
        _log.info("shard %d IDENTIFY asks for privileged intents %d the application lacks: close 4014", shard_id,
                  denied)
        conn.close(4014, "Disallowed intent(s).", keep_session=False)
        return
    guilds = gw.world.guilds_for_shard(shard_id, shard_count)
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
        conn.send(INVALID_SESSION_FALSE)
        return
    if not gw.budget.try_use():
        stats.identify_budget_exhausted += 1
        _log.warning("daily IDENTIFY budget (%d) used up: close 4004, token reset", cfg.session_start_total)
        conn.close(4004, "Authentication failed.", keep_session=False)
        gw.reset_token(why="session start limit exhausted")
        return
    gw.expire_sessions()
    shard_stats = stats.shards[shard_id]
    session = Session(shard_id, shard_count, intents, cfg.resume_buffer, shard_stats, stats,
                      gw.sessions.next_order(), threshold)
    gw.sessions.add(session)
    session.attach(conn)
    gw.routes_changed()
    stats.identifies += 1
    shard_stats.identifies += 1
    shard_stats.sessions += 1
    shard_stats.guilds = len(guilds)
    live_counts = {s.shard_count for s in gw.sessions.live()}
    if len(live_counts) > 1:
        _log.info("sessions with shard counts %s overlap (resharding)", sorted(live_counts))
    world = gw.world
    ready = {
        "v": 10, "user": world.bot_user(), "guilds": world.ready_guilds(shard_id, shard_count),
        "session_id": session.session_id, "resume_gateway_url": resume_url, "shard": [shard_id, shard_count],
        "application": {"id": str(world.application_id), "flags": gw.application.flags}, "private_channels": [],
        "relationships": [], "presences": [],
        "guild_join_requests": [], "user_settings": {}, "session_type": "normal", "auth": {},
        "geo_ordered_rtc_regions": ["us-east", "us-central"], "_trace": ['["innkeeper-sim",{"micros":0}]'],
    }
    session.push("READY", dumps(ready))
    session.push_guild_creates(guilds, world)
    _log.info("shard %d/%d identified (session %s, %d guilds)", shard_id, shard_count, session.session_id[:8],
              len(guilds))


def resume(gw: GatewayCore, conn: Connection, d: object) -> None:
    """Handle op 6 RESUME: replay what the session missed, then RESUMED; or op 9, or close 4007."""
    stats = gw.stats
    if conn.session is not None:
        conn.close(4005, "Already authenticated.")
        return
    if not isinstance(d, dict) or not isinstance(d.get("session_id"), str) or not (
            d.get("seq") is None or is_int(d.get("seq"))):
        conn.close(4002, "Error while decoding payload.")
        return
    if d.get("token") != gw.application.token:
        stats.auth_failures += 1
        conn.close(4004, "Authentication failed.", keep_session=False)
        return
    gw.expire_sessions()  # a session whose resume window passed is gone, even if no timer said so yet
    session = gw.sessions.get(d["session_id"])
    seq = d.get("seq") or 0
    if session is None or not session.resumable(gw.clock(), gw.config.resume_ttl):
        stats.failed_resumes += 1
        _log.info("RESUME of session %s at seq %s refused: op 9", str(d["session_id"])[:8], seq)
        conn.send(INVALID_SESSION_FALSE)
        return
    frames = session.replay_after(seq)
    if frames is None:
        # A seq the session never sent, or one the buffer no longer covers: 4007, start a new session.
        stats.failed_resumes += 1
        if session.conn is None:
            gw.end_session(session, "close 4007 (RESUME with an invalid seq)")
        _log.info("RESUME of session %s at seq %s (the session is at %d): close 4007", session.session_id[:8],
                  seq, session.seq)
        conn.close(4007, "Invalid seq.", keep_session=False)
        return
    old = session.conn
    if old is not None:
        # A new socket took the session over; the old one (a zombie) is closed without touching it.
        old.session = None
        old.close(4000, "Session resumed on another connection.")
    session.attach(conn)
    session.acknowledge(seq)
    gw.routes_changed()
    for frame in frames:
        conn.send(frame)
    session.count_replayed(len(frames))
    session.push("RESUMED", '{"_trace":["[\\"innkeeper-sim\\"]"]}')
    stats.resumes += 1
    session.stats.resumes += 1
    _log.info("shard %d/%d resumed session %s from seq %d (%d replayed)", session.shard_id,
              session.shard_count, session.session_id[:8], seq, len(frames))
