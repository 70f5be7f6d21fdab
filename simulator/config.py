"""The simulator's settings: one frozen dataclass shared by the CLI, the server and the tests."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("SimConfig",)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything that shapes a simulated Discord.

    Every field has a CLI flag of the same name (``--members-per-guild``) on ``python -m simulator``
    and ``innkeeper simulator``.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    guilds: int = 100
    #: ``fixed``: every guild has exactly ``members_per_guild`` humans. ``realistic``: a seeded
    #: heavy-tailed spread whose median guild has ``members_per_guild`` humans, up to ``max_member_count``.
    guild_sizes: str = "realistic"
    members_per_guild: int = 20
    channels_per_guild: int = 3
    #: What ``GET /gateway/bot`` recommends.
    shards: int = 1
    max_concurrency: int = 1
    #: Seconds per identify window (Discord: 5 s). Tests scale it down.
    identify_window: float = 5.0
    #: Bot-wide REST requests per second (interaction callbacks are exempt).
    global_rate: int = 50
    seed: int = 1
    #: The only token accepted (``Authorization: Bot <token>`` and IDENTIFY).
    token: str = "sim-token"
    heartbeat_interval_ms: int = 41_250
    #: Milliseconds the gateway waits before it sends each heartbeat ACK (op 11): a link of known latency,
    #: which the bot's reported gateway latency must match. 0: at once.
    heartbeat_ack_delay_ms: int = 0
    #: Messages per channel per ``message_window`` seconds.
    message_limit: int = 5
    message_window: float = 5.0
    #: Gateway payloads a connection may send per ``gateway_send_window`` seconds before close 4008.
    gateway_send_limit: int = 120
    gateway_send_window: float = 60.0
    #: Guilds a shard may carry before close 4011.
    max_guilds_per_shard: int = 2500
    #: Daily identify budget reported in ``session_start_limit``.
    session_start_total: int = 1000
    #: Dispatches a session keeps for RESUME.
    resume_buffer: int = 10_000
    #: The resume window: seconds a dropped session stays resumable. When it passes without a RESUME the
    #: session ends and every dispatch it buffered is counted lost. Short in tests.
    resume_ttl: float = 120.0
    #: Largest ``member_count`` a realistic world draws (the bot included).
    max_member_count: int = 250_000
    #: Guilds of exactly ``max_member_count`` members on top of the drawn sizes (realistic sizes only).
    huge_guilds: int = 0
    #: Tail exponent of the realistic size spread: P(size > x) ~ x^-tail (smaller: fatter tail).
    size_tail: float = 1.0
    #: Seconds between two requests for a guild's whole member list (Discord: 30 s per guild per bot).
    member_request_interval: float = 30.0
    #: Privileged intents the application's flags grant (``presences``, ``members``, ``message_content``,
    #: comma-separated, or ``none``); an IDENTIFY asking for another one is closed 4014.
    privileged_intents: str = "presences,members,message_content"
    #: Seconds after INTERACTION_CREATE within which the initial response must arrive (Discord: 3).
    interaction_deadline: float = 3.0
    #: Seconds an interaction token works for follow-ups and edits (Discord: 15 minutes).
    interaction_token_ttl: float = 900.0
    #: 401/403/429 answers per ``invalid_request_window`` seconds and IP before a ban (0: never ban).
    invalid_request_limit: int = 10_000
    invalid_request_window: float = 600.0
    #: Seconds a banned IP is refused (Discord documents no duration).
    invalid_request_ban: float = 3600.0
    #: Seconds a message's ``nonce`` is remembered for ``enforce_nonce`` ("the past few minutes").
    nonce_window: float = 300.0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"
