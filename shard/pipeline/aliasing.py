"""Command aliases: the rules for creating them and their expansion for prefix commands.

An alias maps a name to a command line without the prefix (``"r" → "remind 10m stretch"``), for a
whole guild or for one user (the user's own alias wins). Typing ``!r now`` runs ``!remind 10m
stretch now``. Aliases may point at other aliases. The rules, enforced when an alias is created and
again when it is expanded:

* the name is 1-32 characters of letters, digits, ``_`` and ``-`` and never *shadows* a real
  command or a command's own alias (a real command always wins);
* the expansion is at most :data:`MAX_EXPANSION` characters, and following the chain must reach a
  real command within :data:`MAX_DEPTH` steps without coming back to a name already seen (a
  *cycle*);
* the fully expanded line is at most :data:`MAX_EXPANDED` characters.

Expansion is a hook on ``Bot.get_context`` (:func:`expand_context`), so the expanded command goes
through the same pipeline as a typed one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from discord.ext import commands
from discord.ext.commands.view import StringView

from innkeeper.errors import CommandError, ErrorCode

__all__ = ("check_alias", "expand", "expand_context", "Resolver", "MAX_EXPANSION", "MAX_EXPANDED", "MAX_DEPTH",
           "NAME_RE")

_log = logging.getLogger(__name__)

MAX_EXPANSION = 400
MAX_EXPANDED = 1900
MAX_DEPTH = 5
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: name → expansion (or ``None``), as the invoking user would see it.
Resolver = Callable[[str], Awaitable[str | None]]


def _bad(message: str) -> CommandError:
    return CommandError(message, code=ErrorCode.COMMAND_BAD_ARGUMENT)


def _split(line: str) -> tuple[str, str]:
    view = StringView(line.strip())
    first = view.get_word()
    return first, view.read_rest().strip()


async def expand(first: str, rest: str, *, resolve: Resolver, is_command: Callable[[str], bool]) -> str:
    """Follow aliases from ``first`` until a real command; return the full command line.

    Raises
    ------
    CommandError
        ``COMMAND_BAD_ARGUMENT`` for a cycle, a chain deeper than :data:`MAX_DEPTH`, a chain that
        ends in an unknown command, or a result longer than :data:`MAX_EXPANDED`.
    """
    seen: list[str] = []
    word, tail = first, rest
    while not is_command(word):
        if word.lower() in seen:
            raise _bad(f"The alias chain {' → '.join([*seen, word.lower()])} loops; fix or remove one of them.")
        if len(seen) >= MAX_DEPTH:
            raise _bad(f"The alias chain {' → '.join(seen)} is deeper than {MAX_DEPTH} steps.")
        expansion = await resolve(word.lower())
        if expansion is None:
            if seen:
                raise _bad(f"The alias `{seen[-1]}` points at `{word}`, which is not a command.")
            raise _bad(f"`{word}` is not a command or an alias.")
        seen.append(word.lower())
        head, more = _split(expansion)
        word, tail = head, " ".join(p for p in (more, tail) if p)
        if len(word) + len(tail) + 1 > MAX_EXPANDED:
            raise _bad(f"The alias expands to more than {MAX_EXPANDED} characters.")
    return f"{word} {tail}".strip()


async def check_alias(name: str, expansion: str, *, resolve: Resolver, is_command: Callable[[str], bool],
                      prefixes: tuple[str, ...] = ()) -> str:
    """Check a new alias; return its normalised expansion.

    Parameters
    ----------
    name, expansion:
        The alias asked for.
    resolve:
        The resolver the alias will live in (the guild's, or the user's over the guild's); the new
        alias is added to it for the check.
    is_command:
        Whether a word names a real command (or a command's own alias).
    prefixes:
        Prefixes to strip from the expansion if the user typed one (``"!remind …"``).
    """
    if not NAME_RE.fullmatch(name):
        raise _bad("An alias name is 1-32 letters, digits, `_` or `-`.")
    key = name.lower()
    if is_command(key):
        raise _bad(f"`{name}` is a command already; an alias cannot shadow it.")
    line = expansion.strip()
    for prefix in sorted(prefixes, key=len, reverse=True):
        if prefix and line.startswith(prefix):
            line = line[len(prefix):].lstrip()
            break
    if line.startswith("/"):
        line = line[1:]
    if not line:
        raise _bad("The alias needs a command to run.")
    if len(line) > MAX_EXPANSION:
        raise _bad(f"An alias expands to at most {MAX_EXPANSION} characters (this one has {len(line)}).")

    async def with_new(word: str) -> str | None:
        return line if word == key else await resolve(word)

    await expand(key, "", resolve=with_new, is_command=is_command)
    return line


async def expand_context(ctx: commands.Context[Any], resolve: Resolver) -> commands.Context[Any]:
    """Rewrite a prefix context whose first word is an alias into the expanded command.

    Leaves ``ctx`` unchanged when it already found a command, has no prefix, or the word is not an
    alias. A broken alias (cycle, too deep, too long) is reported to the user through the pipeline's
    error path, by leaving ``ctx.command`` unset and raising nothing here.
    """
    if ctx.command is not None or ctx.prefix is None or not ctx.invoked_with:
        return ctx
    bot = ctx.bot
    rest = ctx.view.read_rest()
    try:
        line = await expand(ctx.invoked_with, rest, resolve=resolve,
                            is_command=lambda w: bot.get_command(w) is not None)
    except CommandError as exc:
        if exc.user_message.startswith(f"`{ctx.invoked_with}` is not a command"):
            return ctx  # just an unknown word after the prefix
        ctx.alias_error = exc  # type: ignore[attr-defined]
        return ctx
    view = StringView(line)
    invoker = view.get_word()
    ctx.view = view
    ctx.invoked_with = invoker
    ctx.command = bot.all_commands.get(invoker)
    return ctx
