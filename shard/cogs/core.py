"""Core commands: ``/ping``, ``/help``, ``/status``, ``/health``, ``/metrics`` and ``/debug``.

All of them run with the default guild configuration while the database is unavailable (they are
the ``core`` feature), so operators and users can still see what is going on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from shard.cogs.base import PipelineCog
from shard.pipeline import Level, ThrottleRule, command, respond
from shard.pipeline.catalog import CommandInfo, describe_commands
from shard.pipeline.command_metrics import COMMAND_SECONDS, COMMANDS_TOTAL
from shard.pipeline.validation import clip, neutralise
from shard.status_report import render_status

if TYPE_CHECKING:
    from shard.bot import ClusterBot

__all__ = ("Core", "setup", "chunks")

_log = logging.getLogger(__name__)

_STARTED = time.monotonic()


def chunks(lines: list[str], limit: int = 1900) -> list[str]:
    """Join ``lines`` into messages of at most ``limit`` characters (a line longer than that is cut)."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def _help_line(info: CommandInfo) -> str:
    level = "" if info.level is Level.EVERYONE else f" ({info.level.label})"
    return f"`{info.usage()}`{level} - {info.description}"


def _help_detail(info: CommandInfo, prefix: str) -> list[str]:
    lines = [f"**/{info.name}** - {info.description}", f"Usage: `{info.usage()}` or `{info.usage(prefix)}`",
             f"Needs: {info.level.label}" + (f" (a server may lower it to {info.spec.floor.label})"
                                            if info.spec.floor < info.level else "")]
    for arg in info.arguments:
        extra = f", default {arg.default}" if arg.default else ""
        optional = "" if arg.required else "optional, "
        desc = f" - {arg.description}" if arg.description else ""
        lines.append(f"- `{arg.name}` ({optional}{arg.kind}{extra}){desc}")
    for example in info.spec.examples:
        lines.append(f"Example: `{example}` or `{info.prefix_example(example, prefix)}`")
    if info.aliases:
        lines.append("Also: " + ", ".join(f"`{prefix}{a}`" for a in info.aliases))
    return lines


def _percentile(command: str | None, q: float) -> float | None:
    """Estimate a latency percentile (seconds) from the histogram's buckets (all commands or one)."""
    buckets: dict[float, float] = {}
    for metric in COMMAND_SECONDS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_bucket"):
                continue
            if command is not None and sample.labels.get("command") != command:
                continue
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    for bound, count in ordered:
        if count >= q * total:
            return bound
    return ordered[-1][0]


class Core(PipelineCog):
    """Liveness, help and introspection."""

    @command("ping", description="Check that the bot answers, and how fast.", examples=("/ping",))
    async def ping(self, ctx: commands.Context[Any]) -> None:
        """Answer with the gateway latency of this guild's shard."""
        started = time.perf_counter()
        shard_id = ctx.guild.shard_id if ctx.guild is not None else 0
        shard = self.bot.get_shard(shard_id)
        latency = shard.latency if shard is not None else self.bot.latency
        latency_ms = "n/a" if latency != latency or latency == float("inf") else f"{latency * 1000:.0f} ms"
        await ctx.send(f"Pong! shard {shard_id}, cluster {self.deps.cluster_id}, gateway {latency_ms}")
        _log.debug("ping answered in %.1f ms", (time.perf_counter() - started) * 1000)

    @command("help", description="List the commands you can use here, or explain one.",
             examples=("/help", "/help command:remind"), ephemeral=True)
    async def help(self, ctx: commands.Context[Any], *, command: commands.Range[str, 1, 60] | None = None) -> None:
        """Show the commands this user may run.

        Parameters
        ----------
        command:
            A command to explain, e.g. remind or settings set.
        """
        prefix = ctx.prefix if ctx.prefix and ctx.interaction is None else self.deps.settings.default_prefix
        infos = describe_commands(self.bot)
        if command is not None:
            wanted = command.strip().lstrip("/").lstrip(prefix).lower()
            found = next((i for i in infos if i.name == wanted or wanted in i.aliases), None)
            if found is None or not await self.deps.pipeline.may_run(ctx, found.command):
                await respond(ctx, f"There is no command `{neutralise(wanted, limit=60)}` that you can use here. "
                                   "Try `/help` for the list.")
                return
            await respond(ctx, "\n".join(_help_detail(found, prefix)))
            return
        allowed = [i for i in infos if await self.deps.pipeline.may_run(ctx, i.command)]
        by_feature: dict[str, list[CommandInfo]] = {}
        for info in allowed:
            by_feature.setdefault(info.spec.feature, []).append(info)
        lines = [f"**Commands you can use here** (slash, or `{prefix}` before the name):"]
        for feature in sorted(by_feature):
            lines.append(f"__{feature}__")
            lines.extend(_help_line(i) for i in by_feature[feature])
        lines.append("`/help command:<name>` explains one command.")
        for part in chunks(lines):
            await respond(ctx, part)

    @command("status", description="Every cluster and shard of the bot, and how they are doing.",
             examples=("/status",), defer=True, throttle=ThrottleRule(3, 30.0, "user"))
    async def status(self, ctx: commands.Context[Any]) -> None:
        """Gather the status of every cluster over IPC."""
        report = await self.deps.status.gather()
        for part in chunks(render_status(report, this_cluster=self.deps.cluster_id).split("\n")):
            await ctx.send(part, allowed_mentions=discord.AllowedMentions.none())

    @command("health", description="Whether this cluster, its database and Redis are healthy.",
             examples=("/health",), defer=True, throttle=ThrottleRule(3, 30.0, "user"))
    async def health(self, ctx: commands.Context[Any]) -> None:
        """Check the gateway, PostgreSQL and Redis from this cluster, and its circuit breakers."""
        db_health = await self.deps.db.health()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.deps.ping_redis(), 2.0)
            redis_line = f"ok ({(time.perf_counter() - started) * 1000:.1f} ms)"
            redis_ok = True
        except Exception as exc:
            redis_line, redis_ok = f"unreachable ({type(exc).__name__})", False
        shards = self.bot.shards
        ready = sum(1 for s in shards.values() if not s.is_closed())
        breakers = self.deps.breakers.describe() if self.deps.breakers is not None else {}
        tripped = {name: b for name, b in breakers.items() if b["state"] != "closed"}
        ok = db_health.ok and redis_ok and ready == len(shards) and not tripped
        db_line = f"ok ({db_health.latency_ms} ms)" if db_health.ok else "unavailable"
        lines = [f"**{'Healthy' if ok else 'Degraded'}** - cluster {self.deps.cluster_id}",
                 f"gateway: {ready}/{len(shards)} shards connected, {len(self.bot.guilds)} guilds",
                 f"database: {db_line}", f"redis: {redis_line}"]
        if breakers:
            lines.append("circuit breakers: " + (", ".join(
                f"{name} {b['state']}" + (f" (next try in {b['retry_after_s']:g} s)" if b["retry_after_s"] else "")
                for name, b in tripped.items()) or "all closed"))
        await ctx.send("\n".join(lines), allowed_mentions=discord.AllowedMentions.none())

    @command("metrics", description="A summary of this cluster's command metrics.", examples=("/metrics",),
             level=Level.MOD, throttle=ThrottleRule(3, 30.0, "user"), ephemeral=True)
    async def metrics(self, ctx: commands.Context[Any]) -> None:
        """Commands handled since start-up, by outcome, the busiest commands and latency percentiles."""
        by_outcome: dict[str, float] = {}
        by_command: dict[str, float] = {}
        for metric in COMMANDS_TOTAL.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                by_outcome[sample.labels["outcome"]] = by_outcome.get(sample.labels["outcome"], 0) + sample.value
                by_command[sample.labels["command"]] = by_command.get(sample.labels["command"], 0) + sample.value
        total = int(sum(by_outcome.values()))
        p50, p99 = _percentile(None, 0.5), _percentile(None, 0.99)
        uptime = time.monotonic() - _STARTED
        lines = [f"**Cluster {self.deps.cluster_id}**: {total} commands in {uptime / 60:.0f} min",
                 "by outcome: " + (", ".join(f"{k} {int(v)}" for k, v in sorted(by_outcome.items())) or "none yet"),
                 "busiest: " + (", ".join(f"{k} {int(v)}" for k, v in
                                          sorted(by_command.items(), key=lambda kv: -kv[1])[:5]) or "none yet"),
                 "latency (bucket bounds): " + (f"p50 ≤ {p50 * 1000:g} ms, p99 ≤ {p99 * 1000:g} ms"
                                                if p50 is not None and p99 is not None else "n/a"),
                 f"usage rows waiting to be written: {len(self.deps.usage)}"]
        await respond(ctx, "\n".join(lines), ephemeral=True)

    @command("debug", description="Internals of this shard and cluster (bot owners only).", examples=("/debug",),
             level=Level.OWNER, floor=Level.OWNER, ephemeral=True)
    async def debug(self, ctx: commands.Context[Any]) -> None:
        """Process, gateway and command-layer internals; read-only, no evaluation of any kind."""
        shard_id = ctx.guild.shard_id if ctx.guild is not None else 0
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runtime = self.deps.describe()
        lines = [
            f"cluster {self.deps.cluster_id}, pid {os.getpid()}, up {time.monotonic() - _STARTED:.0f} s, "
            f"peak RSS {rss_kib / 1024:.0f} MiB",
            f"this guild's shard: {shard_id}; shards here: {sorted(self.bot.shards)} of {self.bot.shard_count}",
            f"guilds cached: {len(self.bot.guilds)}, users cached: {len(self.bot.users)}",
            f"asyncio tasks: {len(asyncio.all_tasks())}",
            "command layer: " + ", ".join(f"{k}={v}" for k, v in runtime.items()),
            f"commands loaded: {len(list(self.bot.walk_commands()))}, cogs: {', '.join(sorted(self.bot.cogs))}",
            f"python {platform.python_version()}, discord.py {discord.__version__}, {sys.platform}",
        ]
        await respond(ctx, "\n".join(lines), ephemeral=True)


async def setup(bot: ClusterBot) -> None:
    await bot.add_cog(Core(bot))
