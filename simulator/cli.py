"""``python -m simulator`` and ``innkeeper simulator``: one set of flags, one :class:`SimConfig`.

Every :class:`~simulator.config.SimConfig` field has a flag of the same name (``--members-per-guild``).
Bad values stop with one clear line and exit code 2. ``--port 0 --port-file PATH`` binds a free port
and writes the port it got to ``PATH`` once the simulator listens (for tests and scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from innkeeper.errors import UsageError

from .application import parse_privileged_intents
from .config import SimConfig

if TYPE_CHECKING:
    from innkeeper.settings import Settings

__all__ = ("add_commands", "add_arguments", "config_from_args", "validate_config", "main")

_DEFAULTS = SimConfig()

#: (field, type, help) for every flag; the flag is ``--`` + the field name with dashes.
_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("host", str, "interface to listen on"),
    ("port", int, "TCP port (0 picks a free one)"),
    ("guilds", int, "number of guilds in the world"),
    ("guild_sizes", str, "fixed: every guild has --members-per-guild humans; realistic: a heavy-tailed spread"),
    ("members_per_guild", int, "humans per guild (fixed) or in the median guild (realistic); the bot comes on top"),
    ("channels_per_guild", int, "channels per guild; the first is always a text channel"),
    ("shards", int, "shard count GET /gateway/bot recommends"),
    ("max_concurrency", int, "session_start_limit.max_concurrency (identify buckets)"),
    ("identify_window", float, "seconds per identify window and bucket (Discord: 5)"),
    ("global_rate", int, "bot-wide REST requests per second (interaction callbacks are exempt)"),
    ("seed", int, "world seed: the same seed gives the same ids"),
    ("token", str, "the only bot token accepted (REST and IDENTIFY)"),
    ("heartbeat_interval_ms", int, "HELLO's heartbeat_interval"),
    ("heartbeat_ack_delay_ms", int, "milliseconds each heartbeat ACK is held back (a link of known latency)"),
    ("message_limit", int, "messages per channel per --message-window"),
    ("message_window", float, "seconds of the per-channel message limit"),
    ("gateway_send_limit", int, "payloads a connection may send per --gateway-send-window (else close 4008)"),
    ("gateway_send_window", float, "seconds of the gateway send limit"),
    ("max_guilds_per_shard", int, "guilds one shard may carry (else close 4011)"),
    ("session_start_total", int, "daily IDENTIFY budget (session_start_limit.total)"),
    ("resume_buffer", int, "dispatches a session keeps for RESUME"),
    ("resume_ttl", float, "resume window: seconds a dropped session stays resumable (then its buffer is lost)"),
    ("max_member_count", int, "largest member_count a realistic world draws (the bot included)"),
    ("huge_guilds", int, "guilds of exactly --max-member-count members (realistic sizes only)"),
    ("size_tail", float, "tail exponent of realistic sizes: P(size > x) ~ x^-tail"),
    ("member_request_interval", float, "seconds between whole-member-list requests per guild (Discord: 30)"),
    ("privileged_intents", str, "privileged intents the application is granted: comma-separated presences, "
                                "members, message_content, or none (others close 4014)"),
    ("interaction_deadline", float, "seconds an interaction's initial response may take (Discord: 3)"),
    ("interaction_token_ttl", float, "seconds an interaction token works for follow-ups and edits (Discord: 900)"),
    ("invalid_request_limit", int, "401/403/429 answers per --invalid-request-window before an IP is banned "
                                   "(0: never ban)"),
    ("invalid_request_window", float, "seconds of the invalid-request limit (Discord: 600)"),
    ("invalid_request_ban", float, "seconds a banned IP is refused"),
    ("nonce_window", float, "seconds a sent message's nonce is remembered for enforce_nonce (Discord: "
                            "\"the past few minutes\")"),
)

#: (field, lowest allowed, highest allowed or None).
_BOUNDS: dict[str, tuple[float, float | None]] = {
    "port": (0, 65535), "guilds": (1, 1_000_000), "members_per_guild": (1, 100_000),
    "channels_per_guild": (1, 500), "shards": (1, 100_000), "max_concurrency": (1, 1024),
    "identify_window": (0, None), "global_rate": (1, None), "heartbeat_interval_ms": (100, None),
    "heartbeat_ack_delay_ms": (0, 60_000),
    "message_limit": (1, None), "message_window": (0.001, None), "gateway_send_limit": (1, None),
    "gateway_send_window": (0.001, None), "max_guilds_per_shard": (1, None), "session_start_total": (1, None),
    "resume_buffer": (1, None), "resume_ttl": (0, None), "max_member_count": (2, 1_000_000),
    "huge_guilds": (0, 1000), "size_tail": (0.3, 5), "member_request_interval": (0, None),
    "interaction_deadline": (0.001, None), "interaction_token_ttl": (0.001, None), "invalid_request_limit": (0, None),
    "invalid_request_window": (0.001, None), "invalid_request_ban": (0, None), "nonce_window": (0, None),
}
#: Fields that take one of a few words.
_CHOICES: dict[str, tuple[str, ...]] = {"guild_sizes": ("fixed", "realistic")}


def _metavar(name: str, kind: type) -> str | None:
    if name in _CHOICES:
        return None
    if name == "size_tail":
        return "ALPHA"
    return {int: "N", float: "SECONDS"}.get(kind, name.upper())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`SimConfig` field (defaults from :class:`SimConfig`)."""
    for name, kind, text in _FLAGS:
        default = getattr(_DEFAULTS, name)
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=default,
                            choices=_CHOICES.get(name),
                            metavar=_metavar(name, kind),
                            help=f"{text} (default: {default})")
    parser.add_argument("--port-file", type=Path, default=None, metavar="PATH",
                        help="write the port actually bound to PATH once listening (useful with --port 0)")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def validate_config(config: SimConfig) -> None:
    """Raise :class:`UsageError` naming the flag when a value is out of range."""
    for name, (low, high) in _BOUNDS.items():
        value = getattr(config, name)
        flag = "--" + name.replace("_", "-")
        if value < low or (high is not None and value > high):
            span = f"between {_num(low)} and {_num(high)}" if high is not None else f"at least {_num(low)}"
            raise UsageError(f"{flag} must be {span}, got {_num(value)}")
    for name, words in _CHOICES.items():
        value = getattr(config, name)
        if value not in words:
            raise UsageError(f"--{name.replace('_', '-')} must be one of {', '.join(words)}, got {value!r}")
    if config.guild_sizes == "realistic" and config.max_member_count <= config.members_per_guild:
        raise UsageError("--max-member-count must be above --members-per-guild with realistic sizes")
    if config.huge_guilds > config.guilds:
        raise UsageError(f"--huge-guilds must be at most --guilds ({config.guilds}), got {config.huge_guilds}")
    if not config.token.strip():
        raise UsageError("--token must not be empty")
    if not config.host.strip():
        raise UsageError("--host must not be empty")
    try:
        parse_privileged_intents(config.privileged_intents)
    except ValueError as exc:
        raise UsageError(f"--privileged-intents: {exc}; use a comma-separated list of presences, members, "
                         "message_content, or none") from None
    if config.interaction_token_ttl < config.interaction_deadline:
        raise UsageError("--interaction-token-ttl must be at least --interaction-deadline")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build and validate a :class:`SimConfig` from parsed flags."""
    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(SimConfig)
                              if hasattr(args, f.name)}
    config = SimConfig(**values)
    validate_config(config)
    return config


async def _serve(config: SimConfig, port_file: Path | None = None) -> int:
    from .server import run_simulator

    try:
        await run_simulator(config, port_file=port_file)
    except OSError as exc:
        print(f"simulator: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


async def _handler(args: argparse.Namespace, settings: Settings) -> int:
    return await _serve(config_from_args(args), args.port_file)


def add_commands(subparsers: Any) -> None:
    """Add ``innkeeper simulator`` (the provider hook of ``cluster/innkeeper_cli.py``)."""
    parser = subparsers.add_parser(
        "simulator", help="run the Discord simulator on its own (for load tests and development)",
        description="A Discord-compatible gateway and REST server that unmodified discord.py connects to.")
    add_arguments(parser)
    parser.set_defaults(handler=_handler)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag (``--guilds many``) is one line on stderr and exit 2, like a bad value."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"simulator: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m simulator",
        description="A Discord-compatible gateway and REST server that unmodified discord.py connects to.")
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log level (default: INFO)")
    parser.add_argument("--log-format", default=None, choices=("json", "text"),
                        help="log format (default: text on a terminal, JSON otherwise)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulator``; returns the exit code."""
    from innkeeper.logs import setup_logging

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad flag (exit 2) or --help (exit 0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = config_from_args(args)
    except UsageError as exc:
        print(f"simulator: error: {exc.message}", file=sys.stderr)
        return 2
    setup_logging(args.log_format, args.log_level, role="simulator")
    try:
        return asyncio.run(_serve(config, args.port_file))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
