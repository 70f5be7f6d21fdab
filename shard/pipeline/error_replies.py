"""The *map errors* stage: any exception a command raises → an error code, an outcome and a short,
kind message that tells the user what to do.

:func:`map_error` is pure. It unwraps discord.py's wrappers (``CommandInvokeError``,
``HybridCommandError``, ``ConversionError``, app-command ``CommandInvokeError`` and
``TransformerError``) so that a slash command and its prefix form map the same exception the same
way. Unexpected exceptions become ``E9999`` with a generic message; their details go to the log
only, never to the user. Two outages are named rather than apologised for: an open circuit breaker
(:class:`~innkeeper.breakers.DependencyDown`, ``E6003``, outcome ``unavailable``: what is down and
when to try again) and the invalid-request guard refusing requests
(:class:`~ipc.ratelimit.RequestRefused`, ``E2006``, outcome ``cooling_down``: "The bot is cooling
down…").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from innkeeper.breakers import DependencyDown
from innkeeper.errors import CommandError, DatabaseError, ErrorCode, InnkeeperError, IPCError
from ipc.ratelimit import RequestRefused

from .validation import clip, neutralise

__all__ = ("Failure", "map_error", "unwrap", "OUTCOMES")

#: Every outcome label the metrics use.
OUTCOMES = ("ok", "bad_argument", "forbidden", "disabled", "throttled", "timeout", "not_found", "shed", "failed",
            "error", "unavailable", "cooling_down")

_OURS = "Something went wrong on our side. It has been logged; try again later."

_OUTCOME_BY_CODE = {
    ErrorCode.COMMAND_BAD_ARGUMENT: "bad_argument",
    ErrorCode.COMMAND_FORBIDDEN: "forbidden",
    ErrorCode.COMMAND_DISABLED: "disabled",
    ErrorCode.COMMAND_THROTTLED: "throttled",
    ErrorCode.COMMAND_TIMEOUT: "timeout",
    ErrorCode.NOT_FOUND: "not_found",
    ErrorCode.COMMAND_SHED: "shed",
    ErrorCode.COMMAND_FAILED: "failed",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """What the pipeline does with one failed command."""

    code: ErrorCode
    outcome: str
    #: The message the user sees (already safe to send: no mentions, markdown escaped where echoed).
    message: str
    #: True when the failure is ours (log it with a traceback and store an error event).
    unexpected: bool = False
    #: True when the user should get no reply at all (an unknown prefix command).
    silent: bool = False

    def render(self) -> str:
        """The reply text: the message and the code, e.g. ``"… (E5001)"``."""
        return clip(f"{self.message} ({self.code.value})", 1900)


def unwrap(error: BaseException) -> BaseException:
    """Peel discord.py's wrappers off ``error`` to reach what the command actually raised."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(error, commands.HybridCommandError | commands.CommandInvokeError | commands.ConversionError
                      | app_commands.CommandInvokeError):
            inner = error.original
        elif isinstance(error, app_commands.TransformerError) and isinstance(error.__cause__, Exception):
            inner = error.__cause__
        else:
            return error
        if inner is None or inner is error:
            return error
        error = inner
    return error


def _usage(ctx_command: commands.Command[Any, ..., Any] | None) -> str:
    if ctx_command is None:
        return ""
    signature = ctx_command.signature
    return f" Usage: `/{ctx_command.qualified_name}{' ' + signature if signature else ''}`."


def map_error(error: BaseException, command: commands.Command[Any, ..., Any] | None = None) -> Failure:
    """Map ``error`` (as raised or as delivered to ``on_command_error``) to a :class:`Failure`.

    Parameters
    ----------
    error:
        The exception.
    command:
        The command that failed, when known (adds its usage to argument errors).
    """
    inner = unwrap(error)
    if isinstance(inner, DependencyDown):  # a circuit breaker is open: an outage, named, not a bug
        return Failure(ErrorCode.DEPENDENCY_DOWN, "unavailable", inner.user_message)
    if isinstance(inner, RequestRefused):  # the invalid-request guard holds the bot back from Discord's ban
        return Failure(ErrorCode.REST_COOLING_DOWN, "cooling_down", inner.user_message)
    if isinstance(inner, DatabaseError) and inner.code is ErrorCode.DB_BAD_VALUE:
        return Failure(ErrorCode.COMMAND_BAD_ARGUMENT, "bad_argument", neutralise(inner.user_message, limit=300))
    if isinstance(inner, DatabaseError) and inner.code is ErrorCode.DB_CONSTRAINT:
        text = inner.user_message if inner.user_message != inner.message else "That conflicts with existing data."
        return Failure(inner.code, "failed", neutralise(text, limit=300))
    if isinstance(inner, DatabaseError) and inner.code is ErrorCode.NOT_FOUND:
        return Failure(ErrorCode.NOT_FOUND, "not_found", neutralise(inner.user_message, limit=300))
    if isinstance(inner, DatabaseError):
        return Failure(inner.code, "error", "The database is having trouble right now; try again in a minute.",
                       unexpected=True)
    if isinstance(inner, IPCError):
        return Failure(inner.code, "error", "The other clusters didn't answer in time; try again in a moment.",
                       unexpected=True)
    if isinstance(inner, CommandError):
        outcome = _OUTCOME_BY_CODE.get(inner.code, "failed")
        message = inner.user_message
        if inner.code is ErrorCode.COMMAND_BAD_ARGUMENT:
            message += _usage(command)
        return Failure(inner.code, outcome, message)
    if isinstance(inner, InnkeeperError):
        return Failure(inner.code, "error", _OURS, unexpected=True)
    if isinstance(inner, commands.CommandNotFound):
        return Failure(ErrorCode.NOT_FOUND, "not_found", "Unknown command.", silent=True)
    if isinstance(inner, commands.MissingRequiredArgument | commands.MissingRequiredAttachment):
        return Failure(ErrorCode.COMMAND_BAD_ARGUMENT, "bad_argument",
                       f"`{inner.param.name}` is missing." + _usage(command))
    if isinstance(inner, commands.UserInputError | app_commands.TransformerError
                  | app_commands.CommandSignatureMismatch):
        text = neutralise(str(inner), limit=300) or "That argument isn't valid."
        return Failure(ErrorCode.COMMAND_BAD_ARGUMENT, "bad_argument", text + _usage(command))
    if isinstance(inner, commands.NoPrivateMessage):
        return Failure(ErrorCode.COMMAND_FORBIDDEN, "forbidden", "This command only works in a server.")
    if isinstance(inner, commands.MissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in inner.missing_permissions)
        return Failure(ErrorCode.COMMAND_FORBIDDEN, "forbidden", f"You need the {perms} permission for this.")
    if isinstance(inner, commands.BotMissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in inner.missing_permissions)
        return Failure(ErrorCode.COMMAND_FORBIDDEN, "forbidden",
                       f"I need the {perms} permission here; ask a server admin to grant it.")
    if isinstance(inner, commands.CommandOnCooldown):
        return Failure(ErrorCode.COMMAND_THROTTLED, "throttled",
                       f"You're going too fast: try again in {max(1, round(inner.retry_after))} s.")
    if isinstance(inner, commands.DisabledCommand):
        return Failure(ErrorCode.COMMAND_DISABLED, "disabled", "This command is turned off.")
    if isinstance(inner, commands.CheckFailure | app_commands.CheckFailure):
        return Failure(ErrorCode.COMMAND_FORBIDDEN, "forbidden", "You can't use this command here.")
    if isinstance(inner, TimeoutError):
        return Failure(ErrorCode.COMMAND_TIMEOUT, "timeout", "That took too long and was stopped; try again later.")
    if isinstance(inner, discord.Forbidden):
        return Failure(ErrorCode.DISCORD_HTTP, "failed",
                       "Discord didn't let me do that here; a server admin should check my permissions.")
    if isinstance(inner, discord.HTTPException):
        return Failure(ErrorCode.DISCORD_HTTP, "error", "Discord returned an error; try again in a moment.",
                       unexpected=True)
    return Failure(ErrorCode.INTERNAL, "error", _OURS, unexpected=True)
