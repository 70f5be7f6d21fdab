"""Shared state of one simulator instance, and the contract between its parts.

The gateway side (``simulator/gateway.py``) implements :class:`GatewayHub`; the REST side
(``simulator/rest.py``) and the control API (``simulator/control.py``) use it through
``SimState.gateway``. Everything here lives in one event loop; no locks are needed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from .application import Application
from .message_nonces import RecentNonces
from .snowflakes import DISCORD_EPOCH_MS

if TYPE_CHECKING:
    from .config import SimConfig
    from .world import World

__all__ = ("STATE_KEY", "SimState", "Stats", "ShardStats", "MessageStore", "InteractionWaiters", "CommandStore",
           "GatewayHub", "SnowflakeGen")


class SnowflakeGen:
    """Monotonic snowflakes for objects the simulator creates at run time (messages, interactions)."""

    __slots__ = ("_counter", "_worker")

    def __init__(self, worker: int = 1) -> None:
        self._counter = itertools.count()
        self._worker = worker & 0x1F

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (self._worker << 17) | (next(self._counter) & 0x1FFFF)


@dataclass(slots=True)
class ShardStats:
    """One shard's counters, over all its sessions (see :class:`Stats` for what each counts)."""

    sessions: int = 0
    identifies: int = 0
    resumes: int = 0
    dispatched: int = 0
    buffered: int = 0
    replayed: int = 0
    lost: int = 0
    guilds: int = 0
    closes: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        return {"sessions": self.sessions, "identifies": self.identifies, "resumes": self.resumes,
                "dispatched": self.dispatched, "buffered": self.buffered, "replayed": self.replayed,
                "lost": self.lost, "guilds": self.guilds, "closes": dict(self.closes)}


@dataclass(slots=True)
class Stats:
    """Every counter ``GET /_sim/stats`` reports."""

    identifies: int = 0
    identify_violations: int = 0
    auth_failures: int = 0
    resumes: int = 0
    failed_resumes: int = 0
    heartbeats: int = 0
    send_limit_closes: int = 0
    sharding_required_closes: int = 0
    requests: int = 0
    rate_limited: dict[str, int] = field(default_factory=lambda: {"user": 0, "global": 0, "shared": 0})
    invalid_requests: int = 0
    #: Dispatch events handed to writable sockets, live or replayed by a RESUME.
    dispatched: int = 0
    #: Dispatch events kept only in a session's RESUME buffer: no socket, or a silent or closing one.
    buffered: int = 0
    #: Dispatch events a RESUME sent again (also in ``dispatched``).
    replayed: int = 0
    #: Interaction callbacks the bot posted.
    acknowledged: int = 0
    #: Websocket upgrades refused with 503 during an ``outage`` fault.
    outage_refusals: int = 0
    #: Events the bot never received: ``lost_unrouted + lost_buffered``.
    lost: int = 0
    #: Events meant for a guild no live or resumable session covered (gone at once, as on Discord).
    lost_unrouted: int = 0
    #: Events buffered for a session that ended (its resume window passed without a RESUME, or a close or
    #: op 9 ended it) before they were written to any socket, and that no other live session got.
    lost_buffered: int = 0
    #: Sessions whose resume window ended without a RESUME.
    sessions_expired: int = 0
    #: Connections closed because the client stopped heartbeating (close 4000; the session stays resumable).
    heartbeat_timeouts: int = 0
    messages_created: int = 0
    #: Message sends answered with the message an earlier send with the same ``nonce`` created
    #: (``enforce_nonce``): no new message.
    nonce_duplicates: int = 0
    faults_applied: int = 0
    #: Requests a latency fault with ``if_client_gone: drop`` held and dropped unhandled (the client hung up).
    dropped_requests: int = 0
    #: IDENTIFYs refused (close 4004) because the daily ``session_start_limit`` was used up.
    identify_budget_exhausted: int = 0
    #: Dispatches not sent because the target session's intents exclude them (as Discord does).
    intent_filtered: int = 0
    #: REQUEST_GUILD_MEMBERS received (well-formed, for a guild of the session's shard).
    member_requests: int = 0
    #: Whole-member-list requests answered with RATE_LIMITED (one per guild per ``member_request_interval``).
    member_requests_rate_limited: int = 0
    #: Whole-member-list requests without the GUILD_MEMBERS intent, left unanswered as Discord does.
    member_requests_ignored: int = 0
    #: GUILD_MEMBERS_CHUNKs rendered for a socket, and the members they carried.
    member_chunks_sent: int = 0
    members_sent: int = 0
    #: Gateway connections accepted (HELLO sent), by the transport compression they asked for.
    connections_by_compress: dict[str, int] = field(
        default_factory=lambda: {"none": 0, "zlib-stream": 0, "zstd-stream": 0})
    #: Sessions closed 4014: an IDENTIFY with a privileged intent the application's flags do not grant,
    #: or a live session whose intent a ``PATCH /applications/@me`` took away.
    privileged_intent_closes: int = 0
    #: Bot tokens reset (an exhausted IDENTIFY budget, or ``POST /_sim/token/reset``).
    token_resets: int = 0
    #: RESUMEs sent to the gateway URL instead of READY's ``resume_gateway_url``.
    resumes_off_resume_url: int = 0
    #: Initial interaction responses refused (404 10062) because they came after the deadline.
    late_interaction_callbacks: int = 0
    duplicate_interaction_callbacks: int = 0
    #: Follow-ups and edits refused (401 50027) because the interaction token had expired.
    expired_interaction_tokens: int = 0
    #: REST requests refused because their IP was banned for too many invalid requests.
    banned_requests: int = 0
    #: Bans imposed for too many invalid requests.
    invalid_request_bans: int = 0
    shards: dict[int, ShardStats] = field(default_factory=lambda: defaultdict(ShardStats))
    started_at: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identifies": self.identifies,
            "identify_violations": self.identify_violations,
            "auth_failures": self.auth_failures,
            "resumes": self.resumes,
            "failed_resumes": self.failed_resumes,
            "heartbeats": self.heartbeats,
            "send_limit_closes": self.send_limit_closes,
            "sharding_required_closes": self.sharding_required_closes,
            "requests": self.requests,
            "rate_limited": dict(self.rate_limited),
            "invalid_requests": self.invalid_requests,
            "dispatched": self.dispatched,
            "buffered": self.buffered,
            "replayed": self.replayed,
            "acknowledged": self.acknowledged,
            "outage_refusals": self.outage_refusals,
            "lost": self.lost,
            "lost_unrouted": self.lost_unrouted,
            "lost_buffered": self.lost_buffered,
            "sessions_expired": self.sessions_expired,
            "heartbeat_timeouts": self.heartbeat_timeouts,
            "messages_created": self.messages_created,
            "nonce_duplicates": self.nonce_duplicates,
            "faults_applied": self.faults_applied,
            "dropped_requests": self.dropped_requests,
            "identify_budget_exhausted": self.identify_budget_exhausted,
            "intent_filtered": self.intent_filtered,
            "member_requests": self.member_requests,
            "member_requests_rate_limited": self.member_requests_rate_limited,
            "member_requests_ignored": self.member_requests_ignored,
            "member_chunks_sent": self.member_chunks_sent,
            "members_sent": self.members_sent,
            "connections_by_compress": dict(self.connections_by_compress),
            "privileged_intent_closes": self.privileged_intent_closes,
            "token_resets": self.token_resets,
            "resumes_off_resume_url": self.resumes_off_resume_url,
            "late_interaction_callbacks": self.late_interaction_callbacks,
            "duplicate_interaction_callbacks": self.duplicate_interaction_callbacks,
            "expired_interaction_tokens": self.expired_interaction_tokens,
            "banned_requests": self.banned_requests,
            "invalid_request_bans": self.invalid_request_bans,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "shards": {str(k): v.as_dict() for k, v in sorted(self.shards.items())},
        }


class MessageStore:
    """Messages per channel, oldest first, injected and the bot's alike (bounded per channel)."""

    __slots__ = ("_by_channel", "_limit")

    def __init__(self, per_channel_limit: int = 1000) -> None:
        self._by_channel: dict[int, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=per_channel_limit))
        self._limit = per_channel_limit

    def add(self, channel_id: int, message: dict[str, Any]) -> None:
        self._by_channel[channel_id].append(message)

    def get(self, channel_id: int, message_id: int) -> dict[str, Any] | None:
        """The stored message ``message_id`` of ``channel_id`` (newest are searched first)."""
        key = str(message_id)
        for msg in reversed(self._by_channel.get(channel_id, ())):
            if msg["id"] == key:
                return msg
        return None

    def remove(self, channel_id: int, message_id: int) -> dict[str, Any] | None:
        """Delete and return a stored message, or None when it is not there."""
        msg = self.get(channel_id, message_id)
        if msg is not None:
            self._by_channel[channel_id].remove(msg)
        return msg

    def list(self, channel_id: int, limit: int = 50, before: int | None = None,
             after: int | None = None) -> list[dict[str, Any]]:
        """Newest first, as Discord's ``GET /channels/{id}/messages``."""
        out: list[dict[str, Any]] = []
        for msg in reversed(self._by_channel.get(channel_id, ())):
            mid = int(msg["id"])
            if before is not None and mid >= before:
                continue
            if after is not None and mid <= after:
                continue
            out.append(msg)
            if len(out) >= limit:
                break
        return out


@dataclass(slots=True)
class PendingInteraction:
    interaction_id: int
    token: str
    guild_id: int | None
    channel_id: int
    created: float
    callback: asyncio.Future[dict[str, Any]]
    followups: list[dict[str, Any]] = field(default_factory=list)
    original_edits: list[dict[str, Any]] = field(default_factory=list)
    #: The full INTERACTION_CREATE ``d`` that was dispatched (type, data, member/user, message...).
    payload: dict[str, Any] = field(default_factory=dict)
    #: The original response message (``@original``) once the callback created one, or, for a
    #: component interaction, the message the component belongs to.
    original: dict[str, Any] | None = None
    #: Follow-up messages by id (``/webhooks/{app}/{token}/messages/{id}``).
    followup_messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The simulator's clock when the callback arrived (``created`` is its time at the dispatch).
    acknowledged_at: float | None = None
    #: Initial responses refused because they came after the deadline.
    late_callbacks: int = 0


class InteractionWaiters:
    """Interactions the control API injected, waiting for the bot's callback.

    ``POST /_sim/interactions`` registers one and awaits its future; the REST callback route
    resolves it; webhook follow-ups (``/webhooks/{app_id}/{token}``) append to it by token.
    """

    __slots__ = ("_by_id", "_by_token")

    def __init__(self) -> None:
        self._by_id: dict[int, PendingInteraction] = {}
        self._by_token: dict[str, PendingInteraction] = {}

    def register(self, interaction_id: int, token: str, guild_id: int | None, channel_id: int,
                 created: float) -> PendingInteraction:
        """Remember an interaction dispatched at ``created`` (the simulator's clock)."""
        pending = PendingInteraction(interaction_id, token, guild_id, channel_id, created,
                                     asyncio.get_running_loop().create_future())
        self._by_id[interaction_id] = pending
        self._by_token[token] = pending
        return pending

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[PendingInteraction]:
        """The pending interactions, oldest first."""
        return iter(list(self._by_id.values()))

    def by_id(self, interaction_id: int) -> PendingInteraction | None:
        return self._by_id.get(interaction_id)

    def get(self, interaction_id: int, token: str) -> PendingInteraction | None:
        pending = self._by_id.get(interaction_id)
        if pending is None or pending.token != token:
            return None
        return pending

    def by_token(self, token: str) -> PendingInteraction | None:
        return self._by_token.get(token)

    def discard(self, interaction_id: int) -> None:
        """Forget one interaction (e.g. one that no session received)."""
        pending = self._by_id.pop(interaction_id, None)
        if pending is not None:
            self._by_token.pop(pending.token, None)

    def trim(self, max_count: int) -> int:
        """Forget the oldest interactions beyond ``max_count``; returns how many were dropped."""
        dropped = 0
        while len(self._by_id) > max_count:
            oldest = next(iter(self._by_id))
            self.discard(oldest)
            dropped += 1
        return dropped

    def forget_older_than(self, seconds: float, now: float) -> None:
        """Forget the interactions created more than ``seconds`` before ``now``."""
        cutoff = now - seconds
        for iid, p in list(self._by_id.items()):
            if p.created < cutoff:
                del self._by_id[iid]
                self._by_token.pop(p.token, None)


class CommandStore:
    """Application commands registered by bulk overwrite: global and per guild."""

    __slots__ = ("global_commands", "guild_commands", "_ids")

    def __init__(self, ids: SnowflakeGen) -> None:
        self.global_commands: dict[str, dict[str, Any]] = {}
        self.guild_commands: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._ids = ids

    def overwrite(self, application_id: int, payload: list[dict[str, Any]],
                  guild_id: int | None = None) -> list[dict[str, Any]]:
        target = self.global_commands if guild_id is None else self.guild_commands[guild_id]
        old = dict(target)
        target.clear()
        for cmd in payload:
            name = str(cmd["name"])
            previous = old.get(name)
            stored = {
                "id": previous["id"] if previous else str(self._ids.next()),
                "application_id": str(application_id),
                "version": str(self._ids.next()),
                "type": cmd.get("type", 1),
                "name": name,
                "description": cmd.get("description", ""),
                "options": cmd.get("options", []),
                "default_member_permissions": cmd.get("default_member_permissions"),
                "dm_permission": cmd.get("dm_permission", True),
                "nsfw": cmd.get("nsfw", False),
                "contexts": cmd.get("contexts"),
                "integration_types": cmd.get("integration_types", [0]),
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            target[name] = stored
        return list(target.values())

    def find(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        if guild_id is not None and name in self.guild_commands.get(guild_id, {}):
            return self.guild_commands[guild_id][name]
        return self.global_commands.get(name)


class GatewayHub(Protocol):
    """What the gateway side offers the rest of the simulator."""

    def dispatch_guild(self, guild_id: int, event: str, data: dict[str, Any]) -> bool:
        """Send a dispatch to the sessions that cover ``guild_id``; False when it reached no session.

        Every live session whose ``(shard_id, shard_count)`` covers the guild gets it (several during a
        resharding overlap); when none is live, the newest resumable one buffers it for its RESUME.
        Otherwise it is counted in ``stats.lost``.
        """

    def dispatch_guild_json(self, guild_id: int, event: str, d_json: str) -> bool:
        """:meth:`dispatch_guild` for a ``d`` that is already compact JSON text."""

    def dispatch_shard(self, shard_id: int, event: str, data: dict[str, Any]) -> int:
        """Send a dispatch to every live session of ``shard_id``; returns how many got it."""

    def apply_fault(self, kind: str, shard_id: int | None, *, resumable: bool, code: int,
                    seconds: float = 0.0) -> int:
        """Apply a gateway fault (disconnect, reconnect, invalid_session, silent, outage); returns sessions hit."""

    def shard_count(self) -> int | None:
        """The shard count the live sessions identified with, or None when none is live."""

    def live_shards(self) -> dict[int, int]:
        """Shard id → number of live sessions."""

    async def close_all(self) -> None:
        """Close every socket (server shutdown)."""

    def identify_remaining(self) -> int:
        """IDENTIFYs left in the daily budget (``session_start_limit.remaining`` of ``GET /gateway/bot``)."""

    def identify_reset_after_ms(self) -> int:
        """Milliseconds until the daily budget is full again (``session_start_limit.reset_after``)."""

    def set_identify_remaining(self, remaining: int | None) -> None:
        """Refill the daily budget (``None``), or set how many IDENTIFYs it has left."""

    def terminate_sessions(self, code: int, reason: str) -> int:
        """Close every live session with ``code`` and end every session (live or resumable); returns how many."""

    def close_disallowed_sessions(self) -> int:
        """Close 4014 every session whose intents the application's flags no longer grant; returns how many."""

    def delivery_report(self) -> dict[str, Any]:
        """End the sessions whose resume window passed, then every session's books.

        ``{"sessions": [...], "pending": n, "resume_window_s": s}``: the live and resumable sessions and the
        most recently ended ones (see ``Session.report``); ``pending`` counts the dispatches still waiting
        in resumable (or silent) sessions, which a RESUME would deliver and an expiry would lose.
        """


@dataclass(slots=True)
class SimState:
    """Everything one simulator holds; stored on the aiohttp app under ``STATE_KEY``."""

    config: SimConfig
    world: World
    gateway: GatewayHub
    stats: Stats = field(default_factory=Stats)
    messages: MessageStore = field(default_factory=MessageStore)
    interactions: InteractionWaiters = field(default_factory=InteractionWaiters)
    ids: SnowflakeGen = field(default_factory=SnowflakeGen)
    commands: CommandStore = field(init=False)
    #: REST faults injected by ``POST /_sim/faults`` (kind http_error / latency), consumed per request.
    rest_faults: list[dict[str, Any]] = field(default_factory=list)
    #: Requests a latency fault holds now: ``{"method", "path", "ms", "if_client_gone"}`` (``GET /_sim/faults``).
    held_requests: list[dict[str, Any]] = field(default_factory=list)
    #: DM channels the bot opened (``POST /users/@me/channels``): DM channel id → DM channel object.
    dm_channels: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Users whose DMs are closed to the bot (``POST /_sim/users/{id}/dms``): sends there are 403 50007.
    closed_dms: set[int] = field(default_factory=set)
    #: The shard count ``GET /gateway/bot`` recommends when set (``POST /_sim/gateway``), else ``--shards``.
    recommended_shards: int | None = None
    #: The application (flags, token), shared with the gateway; built from ``config`` when not given.
    application: Application = field(default=cast("Application", None))
    #: Monotonic seconds for interaction deadlines, token lifetimes, REST rate limits and the invalid-request
    #: ban; injectable for tests.
    clock: Callable[[], float] = time.monotonic

    #: Nonces of recent message sends (``enforce_nonce``), see ``simulator.message_nonces``.
    nonces: RecentNonces = field(init=False)

    def __post_init__(self) -> None:
        self.commands = CommandStore(self.ids)
        self.nonces = RecentNonces(self.config.nonce_window, lambda: self.clock())
        if self.application is None:
            self.application = Application.from_config(self.config)


def _state_key() -> Any:
    from aiohttp import web

    return web.AppKey("innkeeper_sim_state", SimState)


#: Where the aiohttp app keeps its :class:`SimState`.
STATE_KEY = _state_key()
