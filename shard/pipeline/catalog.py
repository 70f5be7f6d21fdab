"""The command registry: every pipeline command with its arguments, level and examples.

``/help`` and ``docs/commands.md`` (``python -m shard.docs``) are both generated from
:func:`describe_commands`, so they cannot drift from the code.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

import discord
from discord.ext import commands

from .levels import Level
from .spec import CommandSpec, spec_of

__all__ = ("ArgumentInfo", "CommandInfo", "describe_commands", "describe_type")

_RANGE: Any = commands.Range


@dataclass(frozen=True, slots=True)
class ArgumentInfo:
    name: str
    kind: str
    required: bool
    description: str
    default: str | None


@dataclass(frozen=True, slots=True)
class CommandInfo:
    name: str
    description: str
    arguments: tuple[ArgumentInfo, ...]
    spec: CommandSpec
    aliases: tuple[str, ...]
    command: commands.Command[Any, ..., Any]

    @property
    def level(self) -> Level:
        return self.spec.level

    def usage(self, prefix: str = "/") -> str:
        parts = [f"{prefix}{self.name}"]
        for a in self.arguments:
            parts.append(f"<{a.name}>" if a.required else f"[{a.name}]")
        return " ".join(parts)

    def example_values(self, example: str) -> dict[str, str]:
        """The argument values of a slash example, by parameter name:
        ``/remind when:10m text:stretch`` → ``{"when": "10m", "text": "stretch"}``."""
        rest = example.lstrip("/")
        if not rest.startswith(self.name):
            return {}
        names = {a.name for a in self.arguments}
        values: dict[str, list[str]] = {}
        current: str | None = None
        for word in rest[len(self.name):].split():
            key, sep, value = word.partition(":")
            if sep and key in names:
                current = key
                values[current] = [value] if value else []
            elif current is not None:
                values[current].append(word)
        return {k: " ".join(v) for k, v in values.items()}

    def prefix_example(self, example: str, prefix: str) -> str:
        """The prefix form of a slash example, arguments in parameter order:
        ``/alias add name:r command:remind 10m scope:server`` → ``!alias add r server remind 10m``."""
        rest = example.lstrip("/")
        if not rest.startswith(self.name):
            return prefix + rest
        values = self.example_values(example)
        out = [prefix + self.name]
        last = self.arguments[-1].name if self.arguments else None
        for arg in self.arguments:
            if arg.name not in values:
                continue
            text = values[arg.name]
            out.append(text if arg.name == last or " " not in text else f'"{text}"')
        return " ".join(out)

def describe_type(converter: Any) -> str:
    """A short, human name for a parameter's type."""
    if isinstance(converter, _RANGE):
        lo, hi = converter.min, converter.max
        if converter.annotation is str:
            if lo is not None and hi is not None:
                return f"text, {lo}-{hi} characters"
            return f"text, at most {hi} characters" if hi is not None else f"text, at least {lo} characters"
        bounds = f"{lo if lo is not None else '…'}-{hi if hi is not None else '…'}"
        return f"whole number {bounds}" if converter.annotation is int else f"number {bounds}"
    if typing.get_origin(converter) is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(converter))
    if typing.get_origin(converter) is typing.Union:
        inner = [a for a in typing.get_args(converter) if a is not type(None)]
        return " or ".join(describe_type(a) for a in inner)
    known: dict[Any, str] = {
        str: "text", int: "whole number", float: "number", bool: "yes/no", discord.Role: "role",
        discord.Member: "member", discord.User: "user", discord.TextChannel: "text channel",
        discord.abc.GuildChannel: "channel",
    }
    if converter in known:
        return known[converter]
    label = getattr(converter, "label", None)
    if isinstance(label, str):
        return label
    return getattr(converter, "__name__", str(converter)).lower()


def _descriptions(cmd: commands.Command[Any, ..., Any]) -> dict[str, str]:
    app = getattr(cmd, "app_command", None)
    if app is None:
        return {}
    try:
        return {p.name: p.description for p in app.parameters if p.description and p.description != "…"}
    except AttributeError:
        return {}


def describe_commands(bot: commands.Bot | commands.AutoShardedBot) -> list[CommandInfo]:
    """Every runnable pipeline command (groups themselves excluded), sorted by name."""
    out: list[CommandInfo] = []
    for cmd in bot.walk_commands():
        spec = spec_of(cmd)
        if spec is None or isinstance(cmd, commands.Group):
            continue
        descriptions = _descriptions(cmd)
        args: list[ArgumentInfo] = []
        for name, param in cmd.clean_params.items():
            default = None
            if not param.required and param.default is not inspect.Parameter.empty and param.default is not None:
                default = str(param.displayed_default or param.default)
            args.append(ArgumentInfo(name=param.displayed_name or name, kind=describe_type(param.converter),
                                     required=param.required, description=descriptions.get(name, ""),
                                     default=default))
        description = cmd.description or cmd.short_doc or ""
        out.append(CommandInfo(name=cmd.qualified_name, description=description, arguments=tuple(args), spec=spec,
                               aliases=tuple(cmd.aliases), command=cmd))
    out.sort(key=lambda c: c.name)
    return out
