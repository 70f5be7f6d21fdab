"""The command pipeline: the stages every command passes through, slash and prefix alike.

Mechanism (discord.py-native, one code path)
--------------------------------------------
Each command is defined once with :func:`shard.pipeline.spec.command` (a ``HybridCommand``) and
carries a :class:`~shard.pipeline.spec.CommandSpec`. discord.py parses the arguments for either path
(converters for a message, transformers for an interaction) and then calls the command's callback,
which is the spec's runner; the runner calls :meth:`Pipeline.execute`. Everything that goes wrong,
in parsing or in any stage, reaches discord.py's one error path for hybrid commands
(``on_command_error``), which ``ClusterBot`` hands to :meth:`Pipeline.on_command_error`; the app
command tree's ``on_error`` (errors before a hybrid context exists) goes to
:meth:`Pipeline.on_app_command_error`. So the stages run in this order:

1. **validate**: discord.py's converters, then :func:`~shard.pipeline.validation.validate_arguments`
   on the bound arguments (the same checks for both paths);
   **admission** (:mod:`shard.pipeline.admission`): a place among the commands running now, or in
   the bounded queue behind them (a slash command still waiting at 1.5 s of age is deferred), or
   the command is shed with a kind message (``E5008``);
2. **feature toggle**: the guild turned the command's feature or the command itself off;
3. **permission**: the caller's :class:`~shard.pipeline.levels.Level` against the command's
   required level (default, or the guild's override above the floor);
4. **throttle**: the command's :class:`~shard.pipeline.throttling.ThrottleRule` (owners are exempt);
5. **run** under ``spec.timeout`` or ``Settings.command_timeout_s``, a deadline every retry loop
   below can see (:mod:`innkeeper.deadline`);
6. **map errors** (:func:`~shard.pipeline.error_replies.map_error`) to a code and a short ephemeral reply
   (a plain reply for prefix commands). A *refusal* (any failure before the body ran: stages 1-4,
   or discord.py's parsing) first counts against the user's refusal throttle
   (:mod:`shard.pipeline.refusals`): past it, no reply at all;
7. **audit** admin actions (``spec.audit``): the action, and refused attempts, gathered into one
   row per user and command per window (:mod:`shard.pipeline.denials`);
8. **usage and metrics**: one usage row (batched by the recorder) and the Prometheus counter and
   latency histogram, exactly once per invocation, whatever the outcome.

While the database is unreachable the guild configuration store answers with the last
configuration it read (:mod:`shard.pipeline.store`); for a guild it never read, only the owner-only
commands (which no guild can change) run, and every other command is refused, never run with the
defaults a guild may have turned off or raised.

Before stage 2 the command's dependencies (``spec.needs``, see :mod:`innkeeper.breakers`) are
checked against the process's circuit breakers: while one is open the command is answered at once
with what is down (``E6003``), and commands that don't need it keep working. Every outgoing call
the pipeline makes itself (the deferral, the error reply, the audit row) is bounded by
``Settings.reply_timeout_s``: an answer that cannot go out is given up, never waited on until
shutdown.

Nothing here may crash the bot: the error handlers catch and log their own failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import discord
from discord import app_commands
from discord.ext import commands

from innkeeper import deadline
from innkeeper.errors import CommandError, DatabaseError, ErrorCode, InnkeeperError
from innkeeper.services import BackgroundTasks

from .admission import Admission
from .command_metrics import COMMANDS_TOTAL, PIPELINE_FAILURES, record_command
from .config import GuildConfig, GuildConfigSource
from .context import state_of, tell
from .denials import DENIAL_WINDOW_S, DeniedAttempts, ErasedSince
from .error_replies import Failure, map_error
from .events import AuditEvent, AuditSink, ErrorEvent, ErrorSink, UsageEvent, UsageSink
from .levels import Level, is_moderator, member_level, required_level
from .refusals import REFUSAL_RULE, RefusalGate
from .role_grants import counts_for_levels
from .spec import TOGGLEABLE, CommandSpec, spec_of
from .throttling import Throttle, ThrottleRule, throttle_message
from .validation import clip, validate_arguments

if TYPE_CHECKING:
    from innkeeper.breakers import Breakers
    from innkeeper.settings import Settings

__all__ = ("Pipeline", "UsageSink", "AuditSink", "ErrorSink", "UsageEvent", "AuditEvent", "ErrorEvent")

_log = logging.getLogger(__name__)

#: Seconds the deferral of a command waiting for admission may take.
_DEFER_DEADLINE_S = 2.0


def _describe_argument(value: Any) -> Any:
    if isinstance(value, discord.abc.Snowflake) and not isinstance(value, int):
        return {"id": value.id, "type": type(value).__name__.lower()}
    if value is None or isinstance(value, bool | int | float):
        return value
    return clip(str(value), 200)


class CommandMarks(Protocol):
    """Records that a command started on a message or interaction (see ``Pipeline``'s ``marks``)."""

    def mark(self, shard_id: int, event_id: int) -> None: ...


class Pipeline:
    """Runs commands through the stages (see the module docstring).

    Parameters
    ----------
    settings:
        The process settings (owners, default timeout).
    cluster_id:
        This cluster, for usage rows and error events.
    config:
        Where guild configuration comes from (a cache in front of the database).
    throttle:
        The throttle implementation (the commands' rules, and the refusal rule under its own key).
    usage, audit, errors:
        Where usage rows, audit entries and error events go.
    refusal_rule:
        How many refusals a user is told about (:data:`~shard.pipeline.refusals.REFUSAL_RULE`).
    denial_window_s:
        Refused attempts at an audited command are written as one row per user and command per
        this many seconds (:class:`~shard.pipeline.denials.DeniedAttempts`).
    erased_since:
        Who was erased since when, so that counted refusals of an erased user are never written.
    admission:
        How many commands run at once and wait (:class:`~shard.pipeline.admission.Admission`; from
        the settings when None).
    breakers:
        The process's circuit breakers; a command whose dependency's breaker is open is answered at
        once. None: no check.
    marks:
        Told the message or interaction id of each command as it starts, so a RESUME after a crash
        does not run it again (:class:`shard.replay_guard.ReplayGuard`). None: not recorded.
    """

    def __init__(self, settings: Settings, *, cluster_id: int, config: GuildConfigSource, throttle: Throttle,
                 usage: UsageSink, audit: AuditSink, errors: ErrorSink, refusal_rule: ThrottleRule | None = None,
                 denial_window_s: float | None = None, erased_since: ErasedSince | None = None,
                 breakers: Breakers | None = None, admission: Admission | None = None,
                 marks: CommandMarks | None = None) -> None:
        self.settings = settings
        self.marks = marks
        self.cluster_id = cluster_id
        self.config = config
        self.throttle = throttle
        self.usage = usage
        self.audit = audit
        self.errors = errors
        self.refusals = RefusalGate(throttle, owner_ids=settings.owner_ids, rule=refusal_rule or REFUSAL_RULE)
        self.denials = DeniedAttempts(audit, window_s=denial_window_s or DENIAL_WINDOW_S, erased_since=erased_since)
        self.breakers = breakers
        self.admission = admission or Admission(
            max_running=settings.commands_max_running, max_queued=settings.commands_max_queued,
            max_queue_delay=settings.commands_max_queue_delay_s, defer_after=settings.commands_defer_after_s,
            max_wait=settings.commands_max_wait_s)
        self._tasks = BackgroundTasks("pipeline")

    # --- stages ----------------------------------------------------------------------------------
    async def execute(self, ctx: commands.Context[Any], spec: CommandSpec, arguments: dict[str, Any],
                      call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one command's stages 1-5, then record its success (stages 7-8).

        ``arguments`` are the callback's bound arguments by name; ``call`` runs the command body.
        Failures propagate to discord.py, which hands them to :meth:`on_command_error`.
        """
        state = state_of(ctx)
        cmd = ctx.command
        name = cmd.qualified_name if cmd is not None else "unknown"
        state.arguments = {k: v for k, v in arguments.items() if k not in ("self", "ctx")}
        # 1. validate
        if cmd is not None:
            validate_arguments(cmd.clean_params, arguments)
        if spec.guild_only and ctx.guild is None:
            raise CommandError("This command only works in a server.", code=ErrorCode.COMMAND_FORBIDDEN)
        if self.breakers is not None:  # a dependency that is down: say so at once (DependencyDown, E6003)
            self.breakers.check(spec.dependencies)
        # 1b. admission: a place among the commands running now, or in the queue behind them (or shed)
        interaction = ctx.interaction
        if interaction is None:
            admitted = await self.admission.enter()
        else:
            age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
            admitted = await self.admission.enter(age=max(0.0, age), defer=lambda: self._defer_waiting(ctx, spec))
        if self.marks is not None:  # started: a RESUME after a crash must not run it again (shard/replay_guard.py)
            origin = interaction if interaction is not None else ctx.message
            self.marks.mark(ctx.guild.shard_id if ctx.guild is not None else 0, origin.id)
        try:
            return await self._admitted(ctx, spec, name, call)
        finally:
            self.admission.leave(admitted)

    async def _defer_waiting(self, ctx: commands.Context[Any], spec: CommandSpec) -> None:
        """Defer a slash command still waiting for admission (so that Discord's 3 s hold), within 2 s."""
        interaction = ctx.interaction
        if interaction is not None and not interaction.response.is_done():
            async with asyncio.timeout(_DEFER_DEADLINE_S):
                await ctx.defer(ephemeral=spec.ephemeral)

    async def _admitted(self, ctx: commands.Context[Any], spec: CommandSpec, name: str,
                        call: Callable[[], Awaitable[Any]]) -> Any:
        """Stages 2-8 of a command past admission."""
        state = state_of(ctx)
        cfg = await self._config_for(ctx, spec)
        # 2. feature toggle
        override = cfg.override(name) if cfg is not None else None
        if cfg is not None and spec.feature in TOGGLEABLE and not cfg.feature_enabled(spec.feature):
            raise CommandError(f"The {spec.feature} feature is turned off in this server.",
                               code=ErrorCode.COMMAND_DISABLED)
        if override is not None and not override.enabled:
            raise CommandError(f"/{name} is turned off in this server.", code=ErrorCode.COMMAND_DISABLED)
        # 3. permission
        level = self.level_of(ctx, cfg)
        state.level = level
        needed = required_level(spec.level, override.level if override else None, spec.floor)
        if level < needed:
            raise CommandError(f"/{name} needs the {needed.label} level; yours is {level.label}.",
                               code=ErrorCode.COMMAND_FORBIDDEN)
        # 4. throttle
        if level < Level.OWNER:
            verdict = await self.throttle.hit(name, ctx.author.id, ctx.guild.id if ctx.guild else None, (spec.rule,))
            if not verdict.allowed:
                raise CommandError(throttle_message(verdict.retry_after), code=ErrorCode.COMMAND_THROTTLED,
                                   retry_after=verdict.retry_after)
        # 5. run under a timeout
        state.ran = True
        if spec.defer and ctx.interaction is not None and not ctx.interaction.response.is_done():
            async with asyncio.timeout(self.settings.reply_timeout_s):
                await ctx.defer(ephemeral=spec.ephemeral)
        limit = spec.timeout or self.settings.command_timeout_s
        try:
            with deadline.within(limit):
                async with asyncio.timeout(limit) as window:
                    result = await call()
        except TimeoutError:
            if not window.expired():
                raise
            if state.replied:  # its answer went out (or is on its way): a second one would be a duplicate
                _log.info("/%s timed out after %g s, after answering; no error message sent", name, limit)
                self.finish(ctx, "timeout")
                return None
            raise CommandError(f"/{name} took longer than {limit:g} s and was stopped; try again later.",
                               code=ErrorCode.COMMAND_TIMEOUT) from None
        # 7. audit, 8. usage and metrics
        if spec.audit:
            await self._audit(ctx, name, "ok")
        self.finish(ctx, "ok")
        return result

    async def _config_for(self, ctx: commands.Context[Any], spec: CommandSpec) -> GuildConfig | None:
        """The guild's configuration (the last one read, while the database is down).

        With no configuration at all, only owner-only commands run (on the defaults, which no guild
        can change for them); for any other command the ``DatabaseError`` propagates, since running
        it on the defaults could undo a guild's override.
        """
        if ctx.guild is None:
            return None
        try:
            return await self.config.get(ctx.guild.id)
        except DatabaseError:
            if spec.level is not Level.OWNER:
                raise
            return GuildConfig(ctx.guild.id)

    def level_of(self, ctx: commands.Context[Any], cfg: GuildConfig | None) -> Level:
        """The caller's level in the context's guild (``EVERYONE`` in DMs unless an owner)."""
        author = ctx.author
        perms: discord.Permissions | None = getattr(author, "guild_permissions", None)
        if ctx.guild is None or perms is None:  # a DM, or a user the guild no longer knows as a member
            return member_level(author.id, owner_ids=self.settings.owner_ids)
        return member_level(
            author.id, owner_ids=self.settings.owner_ids, is_guild_owner=ctx.guild.owner_id == author.id,
            administrator=perms.administrator, moderator=is_moderator(perms),
            role_ids=[r.id for r in getattr(author, "roles", ()) if counts_for_levels(r, ctx.guild.id)],
            role_levels=cfg.role_levels if cfg else None,
        )

    async def may_run(self, ctx: commands.Context[Any], cmd: commands.Command[Any, ..., Any]) -> bool:
        """Whether the caller could run ``cmd`` here now (feature, override and level; not throttling)."""
        spec = spec_of(cmd)
        if spec is None:
            return False
        if spec.guild_only and ctx.guild is None:
            return False
        try:
            cfg = await self._config_for(ctx, spec)
        except DatabaseError:
            return False
        override = cfg.override(cmd.qualified_name) if cfg is not None else None
        if cfg is not None and spec.feature in TOGGLEABLE and not cfg.feature_enabled(spec.feature):
            return False
        if override is not None and not override.enabled:
            return False
        needed = required_level(spec.level, override.level if override else None, spec.floor)
        return self.level_of(ctx, cfg) >= needed

    # --- outcome ---------------------------------------------------------------------------------
    def finish(self, ctx: commands.Context[Any], outcome: str) -> None:
        """Record the invocation's outcome once: metrics and a usage row."""
        state = state_of(ctx)
        if state.finished:
            return
        state.finished = True
        state.outcome = outcome
        name = ctx.command.qualified_name if ctx.command is not None else "unknown"
        elapsed = time.perf_counter() - state.started
        record_command(name, outcome, elapsed)
        try:
            self.usage.record(UsageEvent(
                used_at=datetime.now(UTC), guild_id=ctx.guild.id if ctx.guild else None,
                channel_id=ctx.channel.id if ctx.channel is not None else None, user_id=ctx.author.id,
                command=name, cluster_id=self.cluster_id, shard_id=ctx.guild.shard_id if ctx.guild else None,
                success=outcome == "ok", latency_ms=elapsed * 1000,
            ))
        except Exception:
            PIPELINE_FAILURES.labels("usage").inc()
            _log.exception("recording usage of %s failed", name)

    def _audit_event(self, ctx: commands.Context[Any], name: str, outcome: str) -> AuditEvent:
        state = state_of(ctx)
        target_id: int | None = None
        details: dict[str, Any] = {"outcome": outcome}
        args: dict[str, Any] = {}
        for key, value in state.arguments.items():
            args[key] = _describe_argument(value)
            if target_id is None and isinstance(value, discord.abc.Snowflake) and not isinstance(value, int):
                target_id = value.id
        details["args"] = args
        if ctx.channel is not None:
            details["channel_id"] = ctx.channel.id
        if state.level is not None:
            details["level"] = state.level.label
        return AuditEvent(guild_id=ctx.guild.id if ctx.guild else None, actor_id=ctx.author.id,
                          action=clip(f"command.{name}".replace(" ", "."), 64), target_id=target_id, target=None,
                          details=details)

    async def _audit(self, ctx: commands.Context[Any], name: str, outcome: str) -> None:
        try:
            async with asyncio.timeout(self.settings.reply_timeout_s):
                await self.audit.append(self._audit_event(ctx, name, outcome))
        except Exception:
            PIPELINE_FAILURES.labels("audit").inc()
            _log.exception("writing the audit entry for %s failed", name)

    # --- errors ----------------------------------------------------------------------------------
    async def on_command_error(self, ctx: commands.Context[Any], error: BaseException) -> None:
        """discord.py's error path for both kinds of invocation: map, reply, audit, record."""
        try:
            alias_error = getattr(ctx, "alias_error", None)
            if isinstance(error, commands.CommandNotFound) and isinstance(alias_error, CommandError):
                error = alias_error  # the word was an alias that cannot expand: say why
            failure = map_error(error, ctx.command)
            if failure.silent:
                return
            self._log_failure(ctx, failure, error)
            name = ctx.command.qualified_name if ctx.command is not None else "unknown"
            # a refusal (the body never ran) is counted before anything else happens: past the user's
            # refusal rule, nothing does
            # a shed command is the bot's doing, not the user's: always told, never counted
            if state_of(ctx).ran or failure.outcome == "shed" or await self.refusals.may_answer(
                    name, ctx.author.id, ctx.guild.id if ctx.guild else None):
                await self._reply(ctx, failure)
            spec = spec_of(ctx.command)
            if spec is not None and spec.audit and failure.outcome == "forbidden" and ctx.command is not None:
                self.denials.add(self._audit_event(ctx, name, "denied"))
            self.finish(ctx, failure.outcome)
        except Exception:
            PIPELINE_FAILURES.labels("error_handler").inc()
            _log.exception("the command error handler failed")

    async def on_app_command_error(self, interaction: discord.Interaction[Any],
                                   error: app_commands.AppCommandError) -> None:
        """The app command tree's error path (errors before a hybrid context exists)."""
        try:
            ctx = getattr(interaction, "_baton", None)
            if isinstance(ctx, commands.Context):
                await self.on_command_error(ctx, error)
                return
            if isinstance(error, app_commands.CommandNotFound):
                failure = Failure(ErrorCode.NOT_FOUND, "not_found",
                                  "I don't know that command (any more); it may have been removed.")
            else:
                failure = map_error(error)
            name = interaction.command.qualified_name if interaction.command else "unknown"
            COMMANDS_TOTAL.labels(name, failure.outcome).inc()
            if failure.unexpected:
                _log.error("app command %s failed: %s", name, error, exc_info=error)
            if not await self.refusals.may_answer(name, interaction.user.id, interaction.guild_id):
                return  # nothing ran: a refusal like any other
            async with asyncio.timeout(self.settings.reply_timeout_s):
                if not interaction.response.is_done():
                    await interaction.response.send_message(failure.render(), ephemeral=True,
                                                            allowed_mentions=discord.AllowedMentions.none())
                else:
                    await interaction.followup.send(failure.render(), ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())
        except Exception:
            PIPELINE_FAILURES.labels("error_handler").inc()
            _log.exception("the app command error handler failed")

    def _log_failure(self, ctx: commands.Context[Any], failure: Failure, error: BaseException) -> None:
        name = ctx.command.qualified_name if ctx.command is not None else "unknown"
        extra = {"error_code": failure.code.value, "command": name, "outcome": failure.outcome,
                 "guild_id": ctx.guild.id if ctx.guild else None, "user_id": ctx.author.id}
        if not failure.unexpected:
            _log.debug("command %s refused: %s", name, failure.message, extra=extra)
            return
        _log.error("command %s failed: %s", name, error, exc_info=error, extra=extra)
        event = ErrorEvent(code=failure.code.value, message=f"{type(error).__name__}: {error}"[:4000], command=name,
                           guild_id=ctx.guild.id if ctx.guild else None,
                           channel_id=ctx.channel.id if ctx.channel is not None else None, user_id=ctx.author.id,
                           cluster_id=self.cluster_id, shard_id=ctx.guild.shard_id if ctx.guild else None)
        self._tasks.spawn(self._store_error(event), name="store-error")

    async def _store_error(self, event: ErrorEvent) -> None:
        try:
            await self.errors.record(event)
        except Exception:
            PIPELINE_FAILURES.labels("error_event").inc()
            _log.exception("storing an error event failed")

    async def _reply(self, ctx: commands.Context[Any], failure: Failure) -> None:
        try:
            async with asyncio.timeout(self.settings.reply_timeout_s):
                await tell(ctx, failure.render())
        except TimeoutError:
            PIPELINE_FAILURES.labels("reply").inc()
            _log.warning("could not tell the user about a failed command: no answer from Discord in %g s",
                         self.settings.reply_timeout_s)
        except (discord.HTTPException, InnkeeperError) as exc:  # refused by a guard or an open breaker too
            PIPELINE_FAILURES.labels("reply").inc()
            _log.warning("could not tell the user about a failed command: %s", exc)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for background writes (error events) to finish; used at shutdown."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._tasks.wait()
        await self._tasks.cancel()

    async def start(self) -> None:
        """Start writing the gathered denied attempts (the pipeline is otherwise a service only to drain)."""
        await self.denials.start()

    async def stop(self) -> None:
        await self.drain()
        await self.denials.stop()
