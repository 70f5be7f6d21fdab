"""One root exception with error codes.

Users see a short, kind message and the code (``E2001``); logs get the full context. Modules raise
:class:`InnkeeperError` (or a subclass) with an :class:`ErrorCode`; boundaries (the CLI, the
command pipeline, the status service) turn it into an exit code, an ephemeral reply or an HTTP
status.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = (
    "ErrorCode",
    "InnkeeperError",
    "ConfigError",
    "UsageError",
    "IPCError",
    "DatabaseError",
    "CommandError",
)


class ErrorCode(enum.Enum):
    """Stable error codes. The value is what users and logs see; never reuse a value."""

    # 1xxx: configuration and usage
    CONFIG_MISSING = "E1001"
    CONFIG_INVALID = "E1002"
    USAGE = "E1003"
    # 2xxx: Discord and the gateway
    DISCORD_AUTH = "E2001"
    DISCORD_HTTP = "E2002"
    IDENTIFY_BUDGET = "E2003"
    GATEWAY_FATAL = "E2004"
    CHANNEL_UNWRITABLE = "E2005"
    REST_COOLING_DOWN = "E2006"
    COMMAND_SYNC_FAILED = "E2007"
    GATEWAY_EVENT_FAILED = "E2008"
    # 3xxx: IPC and Redis
    IPC_DECODE = "E3001"
    IPC_TIMEOUT = "E3002"
    IPC_UNKNOWN_ACTION = "E3003"
    REDIS_UNAVAILABLE = "E3004"
    IPC_BUSY = "E3005"
    IPC_UNAUTHENTICATED = "E3006"
    # 4xxx: database
    DB_UNAVAILABLE = "E4001"
    DB_QUERY = "E4002"
    DB_CONSTRAINT = "E4003"
    DB_MIGRATION = "E4004"
    DB_SCHEMA_OUTDATED = "E4005"
    DB_BAD_VALUE = "E4006"
    DB_LEGACY_CIPHERTEXT = "E4007"
    # 5xxx: commands
    COMMAND_BAD_ARGUMENT = "E5001"
    COMMAND_FORBIDDEN = "E5002"
    COMMAND_THROTTLED = "E5003"
    COMMAND_DISABLED = "E5004"
    COMMAND_TIMEOUT = "E5005"
    COMMAND_FAILED = "E5006"
    NOT_FOUND = "E5007"
    COMMAND_SHED = "E5008"
    # 6xxx: cluster runtime
    SUPERVISOR = "E6001"
    CLUSTER_UNHEALTHY = "E6002"
    DEPENDENCY_DOWN = "E6003"
    # 9xxx: anything unexpected
    INTERNAL = "E9999"


class InnkeeperError(Exception):
    """The root of every error Innkeeper raises on purpose.

    Parameters
    ----------
    code:
        The stable :class:`ErrorCode`.
    message:
        A one-line description for logs and operators.
    user_message:
        What a Discord user may see. Defaults to ``message``.
    **context:
        Extra structured fields for logs (never shown to users).
    """

    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        user_message: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code or self.default_code
        self.message = message
        self.user_message = user_message or message
        self.context = context

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.message}"


class ConfigError(InnkeeperError):
    """A setting is missing or malformed; the message names the variable."""

    default_code = ErrorCode.CONFIG_INVALID


class UsageError(InnkeeperError):
    """The CLI or an API was called with bad arguments."""

    default_code = ErrorCode.USAGE


class IPCError(InnkeeperError):
    """An IPC message could not be decoded, routed or answered."""

    default_code = ErrorCode.IPC_DECODE


class DatabaseError(InnkeeperError):
    """A database operation failed; raised at the storage boundary in place of asyncpg's errors."""

    default_code = ErrorCode.DB_QUERY


class CommandError(InnkeeperError):
    """A user command failed in a way the user should be told about."""

    default_code = ErrorCode.COMMAND_FAILED
