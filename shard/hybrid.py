"""Typed front for ``commands.hybrid_command``.

mypy 2 cannot solve the ParamSpec union in discord.py's ``hybrid_command`` signature and reports
every decorated method as an argument-type error. This wrapper keeps one ``cast`` here instead of
an ignore on every command.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from discord.ext import commands

__all__ = ("hybrid_command", "HybridCallback")

HybridCallback = Callable[..., Coroutine[Any, Any, Any]]


def hybrid_command(
    name: str, **attrs: Any
) -> Callable[[HybridCallback], commands.HybridCommand[Any, ..., Any]]:
    """Same as :func:`discord.ext.commands.hybrid_command`, with a signature mypy can check."""
    return cast(Callable[[HybridCallback], "commands.HybridCommand[Any, ..., Any]"],
                commands.hybrid_command(name=name, **attrs))
