"""Error mapping: every exception → a code, an outcome and a short message that says what to do."""

from __future__ import annotations

import inspect
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from innkeeper.errors import CommandError, DatabaseError, ErrorCode, InnkeeperError, IPCError
from shard.pipeline.error_replies import OUTCOMES, map_error, unwrap


def _param(name: str) -> commands.Parameter:
    return commands.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def test_our_errors_keep_their_code_and_message() -> None:
    f = map_error(CommandError("Nope.", code=ErrorCode.COMMAND_FORBIDDEN))
    assert (f.code, f.outcome, f.message, f.unexpected) == (ErrorCode.COMMAND_FORBIDDEN, "forbidden", "Nope.", False)
    assert f.render() == "Nope. (E5002)"
    assert map_error(CommandError("gone", code=ErrorCode.NOT_FOUND)).outcome == "not_found"


def test_wrappers_are_unwrapped_the_same_way_for_both_paths() -> None:
    inner = CommandError("Too long.", code=ErrorCode.COMMAND_BAD_ARGUMENT)
    prefix = commands.CommandInvokeError(inner)
    fake_command: Any = type("C", (), {"name": "x"})()
    slash = commands.HybridCommandError(app_commands.CommandInvokeError(fake_command, inner))
    assert unwrap(prefix) is inner and unwrap(slash) is inner
    assert map_error(prefix) == map_error(slash)


def test_internal_details_never_reach_the_user() -> None:
    for exc in (RuntimeError("secret"), KeyError("secret"), InnkeeperError("secret")):
        f = map_error(commands.CommandInvokeError(exc))
        assert f.unexpected and "secret" not in f.message and f.outcome == "error"
    assert map_error(RuntimeError("x")).code is ErrorCode.INTERNAL


def test_database_and_ipc_errors() -> None:
    bad = map_error(DatabaseError("x", code=ErrorCode.DB_BAD_VALUE, user_message="The prefix must be short."))
    assert bad.code is ErrorCode.COMMAND_BAD_ARGUMENT and bad.message == "The prefix must be short."
    down = map_error(DatabaseError("conn refused 10.0.0.1", code=ErrorCode.DB_UNAVAILABLE))
    assert down.unexpected and "10.0.0.1" not in down.message and down.code is ErrorCode.DB_UNAVAILABLE
    taken = map_error(DatabaseError("alias exists", code=ErrorCode.DB_CONSTRAINT,
                                    user_message="An alias named 'p' already exists."))
    assert taken.outcome == "failed" and taken.message == "An alias named 'p' already exists."
    gone = map_error(DatabaseError("nope", code=ErrorCode.NOT_FOUND, user_message="There is no feedback #4."))
    assert gone.outcome == "not_found" and gone.message == "There is no feedback #4."
    ipc = map_error(IPCError("timeout", code=ErrorCode.IPC_TIMEOUT))
    assert ipc.code is ErrorCode.IPC_TIMEOUT and "try again" in ipc.message


def test_discord_py_user_errors() -> None:
    missing = map_error(commands.MissingRequiredArgument(_param("text")))
    assert missing.code is ErrorCode.COMMAND_BAD_ARGUMENT and "`text` is missing" in missing.message
    bad = map_error(commands.BadArgument('Member "@everyone" not found.'))
    assert bad.outcome == "bad_argument" and "@everyone" not in bad.message
    assert map_error(commands.NoPrivateMessage()).code is ErrorCode.COMMAND_FORBIDDEN
    assert "manage guild" in map_error(commands.MissingPermissions(["manage_guild"])).message
    cd = map_error(commands.CommandOnCooldown(commands.Cooldown(1, 10), 4.2, commands.BucketType.user))
    assert cd.code is ErrorCode.COMMAND_THROTTLED and "4 s" in cd.message
    assert map_error(commands.DisabledCommand()).code is ErrorCode.COMMAND_DISABLED
    assert map_error(commands.CheckFailure()).outcome == "forbidden"
    assert map_error(TimeoutError()).code is ErrorCode.COMMAND_TIMEOUT
    assert map_error(commands.CommandNotFound()).silent


class _Resp:
    status = 403
    reason = "Forbidden"


def test_discord_http_errors() -> None:
    forbidden = map_error(discord.Forbidden(_Resp(), "Missing Access"))  # type: ignore[arg-type]
    assert forbidden.code is ErrorCode.DISCORD_HTTP and "permissions" in forbidden.message


def test_usage_is_added_to_argument_errors() -> None:
    async def cb(ctx: commands.Context[Any], when: str, *, text: str) -> None:
        pass

    cmd: commands.Command[Any, ..., Any] = commands.Command(cb, name="remind")
    f = map_error(commands.MissingRequiredArgument(_param("text")), cmd)
    assert f.message.endswith("Usage: `/remind <when> <text>`.")


def test_every_outcome_is_known() -> None:
    samples: list[BaseException] = [
        CommandError("x", code=c) for c in ErrorCode
    ] + [RuntimeError(), TimeoutError(), commands.BadArgument("x"), commands.CheckFailure()]
    for exc in samples:
        assert map_error(exc).outcome in OUTCOMES
        assert len(map_error(exc).render()) <= 1900


def test_outages_are_named_not_apologised_for() -> None:
    """An open breaker (E6003) and the invalid-request guard (E2006), however deep discord.py wrapped them."""
    from db.pool import DatabaseDown
    from innkeeper.breakers import DependencyDown
    from ipc.ratelimit import RequestRefused

    fake_command: Any = type("C", (), {"name": "x"})()
    for exc in (DatabaseDown(4.2), DependencyDown("postgres", 4.2)):
        assert isinstance(exc, DependencyDown)
        f = map_error(commands.HybridCommandError(app_commands.CommandInvokeError(fake_command, exc)))
        assert (f.code, f.outcome, f.unexpected) == (ErrorCode.DEPENDENCY_DOWN, "unavailable", False)
        assert f.message.startswith("The database is unreachable right now") and "about 5 s" in f.message
        assert f.render().endswith("(E6003)")
    assert isinstance(DatabaseDown(1.0), DatabaseError) and DatabaseDown(1.0).code is ErrorCode.DB_UNAVAILABLE
    rest = map_error(commands.CommandInvokeError(DependencyDown("discord_rest", 0.2)))
    assert rest.message.startswith("Discord's API is unreachable right now") and "about 1 s" in rest.message
    refused = map_error(commands.CommandInvokeError(RequestRefused(120.0, 9001)))
    assert (refused.code, refused.outcome, refused.unexpected) == (ErrorCode.REST_COOLING_DOWN, "cooling_down", False)
    assert refused.message.startswith("The bot is cooling down") and refused.render().endswith("(E2006)")
