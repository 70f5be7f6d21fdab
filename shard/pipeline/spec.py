"""One definition per command: a hybrid command plus a :class:`CommandSpec` of pipeline metadata.

``@command("remind", level=..., throttle=..., example=...)`` builds a discord.py
``HybridCommand`` (slash and prefix from the same function) whose callback is a thin *runner*
around the function. discord.py calls that callback on both paths (``Command.invoke`` for a prefix
message, ``HybridAppCommand._invoke_with_namespace`` for an interaction), after it has parsed the
arguments, so the runner is the single place every command passes through: it hands the call to
``bot.pipeline`` (:class:`shard.pipeline.core.Pipeline`), which runs the stages in order. A command
cannot bypass the pipeline: without ``bot.pipeline`` the runner refuses to run it.

The runner is built so that discord.py sees the original function: it carries ``__wrapped__`` (so
``inspect.signature`` reports the real parameters), and it shares the original's module globals (so
the string annotations of ``from __future__ import annotations`` resolve where they were written).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from discord.ext import commands

from innkeeper.breakers import DEPENDENCIES
from innkeeper.errors import CommandError, ErrorCode

from .levels import Level
from .throttling import ThrottleRule


class Runner(Protocol):
    """What the runner hands each call to: ``bot.pipeline`` (:class:`shard.pipeline.core.Pipeline`)."""

    async def execute(self, ctx: commands.Context[Any], spec: CommandSpec, arguments: dict[str, Any],
                      call: Callable[[], Awaitable[Any]]) -> Any: ...

__all__ = ("CommandSpec", "spec", "command", "group", "subcommand", "spec_of", "DEFAULT_THROTTLE", "FEATURES",
           "TOGGLEABLE", "FEATURE_NEEDS")

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

#: Every feature a command can belong to.
FEATURES = ("core", "settings", "permissions", "aliases", "feedback", "reminders", "privacy", "audit", "stats")
#: Features a guild may turn off (the rest keep the bot manageable and users' privacy rights intact).
TOGGLEABLE = ("aliases", "feedback", "reminders", "stats")

#: Applied when a spec sets no rule: generous for humans, tight for scripts.
DEFAULT_THROTTLE = ThrottleRule(5, 10.0, "user")

#: What a command needs (circuit-breaker dependencies, see :mod:`innkeeper.breakers`) when its spec
#: does not say: every feature but ``core`` keeps its data in PostgreSQL. Redis is no command's hard
#: dependency (each of its users falls back), and Discord's API is guarded where requests leave.
FEATURE_NEEDS: dict[str, tuple[str, ...]] = {
    feature: (() if feature == "core" else ("postgres",)) for feature in FEATURES}


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """What the pipeline needs to know about one command.

    Attributes
    ----------
    level:
        The level required by default (see :mod:`shard.pipeline.levels`).
    floor:
        The lowest level a guild may lower it to with ``/permissions command``.
    feature:
        The feature the command belongs to; a guild can toggle the :data:`TOGGLEABLE` ones.
    throttle:
        The rate limit; ``None`` means :data:`DEFAULT_THROTTLE`.
    audit:
        Write an audit-log entry (an admin action): on success, and on a refused attempt.
    timeout:
        Seconds the command may run; ``None`` means ``Settings.command_timeout_s``.
    defer:
        Defer a slash command's response before running (for commands that may take seconds).
    ephemeral:
        Slash replies are visible to the invoking user only.
    guild_only:
        Refuse the command in DMs.
    examples:
        Examples for ``/help`` and ``docs/commands.md`` (slash form; the prefix form is derived).
    needs:
        The dependencies the command cannot work without (``"postgres"``…); while one's circuit
        breaker is open the command is answered at once with what is down (``E6003``). ``None``
        means its feature's (:data:`FEATURE_NEEDS`).
    """

    level: Level = Level.EVERYONE
    floor: Level = Level.EVERYONE
    feature: str = "core"
    throttle: ThrottleRule | None = None
    audit: bool = False
    timeout: float | None = None
    defer: bool = False
    ephemeral: bool = False
    guild_only: bool = False
    examples: tuple[str, ...] = field(default_factory=tuple)
    needs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"unknown feature {self.feature!r}")
        if self.needs is not None and not set(self.needs) <= set(DEPENDENCIES):
            raise ValueError(f"unknown dependency in {self.needs!r}; known: {', '.join(DEPENDENCIES)}")
        if self.floor > self.level:
            raise ValueError("a command's floor cannot be above its level")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def rule(self) -> ThrottleRule:
        return self.throttle or DEFAULT_THROTTLE

    @property
    def dependencies(self) -> tuple[str, ...]:
        """What the command needs: ``needs``, or its feature's."""
        return FEATURE_NEEDS[self.feature] if self.needs is None else self.needs


_SPEC_ATTR = "__innkeeper_spec__"


def _find_ctx(args: tuple[Any, ...]) -> commands.Context[Any]:
    for arg in args[:2]:
        if isinstance(arg, commands.Context):
            return arg
    raise TypeError("a pipeline command's callback must receive a commands.Context")


def spec(**meta: Any) -> Callable[[F], F]:
    """Attach a :class:`CommandSpec` to a command function and route its calls through the pipeline.

    Use it under a discord.py decorator (``@group.command(...)``); :func:`command` and :func:`group`
    combine both.
    """
    cmd_spec = CommandSpec(**meta)

    def decorate(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise TypeError("pipeline commands must be coroutine functions")
        signature = inspect.signature(func)
        # Local names only: the runner gets the command module's globals (see the module docstring).
        dispatch = _dispatch
        original = func
        the_spec = cmd_spec

        async def runner(*args: Any, **kwargs: Any) -> Any:
            return await dispatch(the_spec, original, signature, args, kwargs)

        rebuilt = types.FunctionType(runner.__code__, func.__globals__, func.__name__, runner.__defaults__,
                                     runner.__closure__)
        functools.update_wrapper(rebuilt, func)
        setattr(rebuilt, _SPEC_ATTR, cmd_spec)
        return cast(F, rebuilt)

    return decorate


async def _dispatch(cmd_spec: CommandSpec, func: Callable[..., Coroutine[Any, Any, Any]],
                    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    ctx = _find_ctx(args)
    pipeline: Runner | None = getattr(ctx.bot, "pipeline", None)
    if pipeline is None:
        raise CommandError("the command pipeline is not installed on this bot", code=ErrorCode.INTERNAL)
    bound = signature.bind(*args, **kwargs)
    arguments = dict(bound.arguments)
    return await pipeline.execute(ctx, cmd_spec, arguments, lambda: func(*bound.args, **bound.kwargs))


def spec_of(cmd: commands.Command[Any, ..., Any] | None) -> CommandSpec | None:
    """The spec of a command built with :func:`spec` (``None`` for anything else)."""
    if cmd is None:
        return None
    value = getattr(cmd.callback, _SPEC_ATTR, None)
    return value if isinstance(value, CommandSpec) else None


def command(name: str, *, description: str, aliases: tuple[str, ...] = (), **meta: Any
            ) -> Callable[[F], commands.HybridCommand[Any, ..., Any]]:
    """A hybrid command routed through the pipeline: ``@command("ping", description=..., level=...)``."""
    def decorate(func: F) -> commands.HybridCommand[Any, ..., Any]:
        wrapped = spec(**meta)(func)
        hybrid = commands.hybrid_command(name=name, description=description, aliases=list(aliases))
        return hybrid(wrapped)
    return decorate


def group(name: str, *, description: str, **meta: Any) -> Callable[[F], commands.HybridGroup[Any, ..., Any]]:
    """A hybrid group routed through the pipeline. Its own callback runs for the bare prefix form
    (``!settings``) and should show the group's help."""
    meta.setdefault("needs", ())  # a group's own callback only shows its help
    def decorate(func: F) -> commands.HybridGroup[Any, ..., Any]:
        wrapped = spec(**meta)(func)
        hybrid = commands.hybrid_group(name=name, description=description, invoke_without_command=True,
                                       fallback=None)
        return hybrid(wrapped)
    return decorate


def subcommand(parent: commands.HybridGroup[Any, ..., Any], name: str, *, description: str, **meta: Any
               ) -> Callable[[F], commands.HybridCommand[Any, ..., Any]]:
    """A subcommand of a hybrid group, routed through the pipeline:
    ``@subcommand(settings, "show", description=..., level=...)``."""
    def decorate(func: F) -> commands.HybridCommand[Any, ..., Any]:
        wrapped = spec(**meta)(func)
        # one cast here instead of an ignore per command (mypy cannot solve discord.py's ParamSpec union)
        add = cast(Callable[[Any], "commands.HybridCommand[Any, ..., Any]"],
                   parent.command(name=name, description=description))
        return add(wrapped)
    return decorate
