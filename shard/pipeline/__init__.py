"""The command pipeline: one path for every command, slash and prefix alike.

See :mod:`shard.pipeline.core` for the stages and the discord.py mechanism behind them, and
:mod:`shard.pipeline.spec` for how one definition yields both forms of a command.

Modules: ``spec`` (definitions), ``core`` (the stages), ``validation``, ``levels`` (permissions),
``throttling``, ``errors`` (error mapping), ``context`` (replies), ``config`` and ``store`` (guild
configuration), ``durations`` (time parsing), ``metrics``.
"""

from __future__ import annotations

from .config import GuildConfig, Override
from .context import PipelineContext, respond
from .core import Pipeline
from .levels import Level
from .spec import CommandSpec, command, group, spec, spec_of, subcommand
from .throttling import ThrottleRule

__all__ = (
    "Pipeline", "PipelineContext", "respond", "CommandSpec", "command", "group", "spec", "spec_of", "subcommand",
    "Level", "ThrottleRule", "GuildConfig", "Override",
)
