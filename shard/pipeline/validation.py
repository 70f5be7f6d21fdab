"""The *validate* stage: argument limits, and neutralising user text the bot echoes.

discord.py parses arguments differently for the two paths: prefix commands run converters (and
check ``commands.Range``) while parsing, but a slash command's ``Range`` and ``Literal`` are only
metadata for Discord's client, and a raw gateway payload can carry anything. So after parsing,
:func:`validate_arguments` checks every bound argument again, the same way for both paths:

* ``commands.Range[int|float, lo, hi]``: the value's type and range;
* ``commands.Range[str, lo, hi]``: the length;
* ``Literal[...]``: membership;
* every ``str``: no NUL or other control characters, no lone surrogates (PostgreSQL and JSON reject
  them), and at most :data:`DEFAULT_MAX_TEXT` characters unless a ``Range`` says otherwise.

Text the bot sends back goes through :func:`neutralise` and every echo is sent with
``AllowedMentions.none()``, so ``@everyone`` in a reminder pings nobody. :func:`neutralise` also
removes what would make the echo say something else than it shows:

* **invisible and bidirectional control characters** (Unicode format characters: ``U+202E``
  right-to-left override, ``U+2066``-``U+2069`` isolates, zero-width spaces and joiners, ``U+FEFF``,
  tag characters...) and line/paragraph separators, which reorder or hide text;
* **masked links** ``[text](url)``, which show ``text`` and lead elsewhere: ``](`` becomes ``] (``,
  so the reader sees the address itself. Discord only draws a masked link when ``](`` touch.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
import unicodedata
from collections.abc import Mapping
from typing import Any

import discord
from discord.ext import commands

from innkeeper.errors import CommandError, ErrorCode

__all__ = (
    "DEFAULT_MAX_TEXT",
    "neutralise",
    "clip",
    "check_text",
    "validate_arguments",
    "NO_MENTIONS",
)

#: Longest free-text argument accepted when the command sets no ``Range``.
DEFAULT_MAX_TEXT = 1000

#: Sent with every message that echoes user text.
NO_MENTIONS = discord.AllowedMentions.none()

#: ``commands.Range`` is ``Annotated`` to type checkers; at runtime it is the class its items are made of.
_RANGE: Any = commands.Range

_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


#: Line and paragraph separators (they break lines where Discord's preview shows none).
_SEPARATORS = {"\u2028", "\u2029", "\u0085"}
#: ``](`` with anything invisible between: the joint of a masked link.
_LINK_JOINT = re.compile(r"\]\s*\(")


def _visible(text: str) -> str:
    """``text`` without invisible or bidirectional control characters (Unicode category Cf) and separators."""
    if text.isascii():
        return text
    return "".join(" " if ch in _SEPARATORS else ch for ch in text
                   if ch in _SEPARATORS or unicodedata.category(ch) != "Cf")


def neutralise(text: str, *, limit: int | None = None) -> str:
    """Make user text safe to echo (see the module docstring): invisible and bidirectional control
    characters removed, masked links broken, markdown escaped, mentions broken, optionally clipped."""
    plain = _LINK_JOINT.sub("] (", _visible(text))
    safe = discord.utils.escape_mentions(discord.utils.escape_markdown(plain))
    return clip(safe, limit) if limit is not None else safe


def _bad(message: str) -> CommandError:
    return CommandError(message, code=ErrorCode.COMMAND_BAD_ARGUMENT)


def check_text(name: str, value: str, *, min_len: int | None = None, max_len: int | None = None) -> str:
    """Check one text argument; return it unchanged or raise ``COMMAND_BAD_ARGUMENT``."""
    if _BAD_CHARS.search(value):
        raise _bad(f"`{name}` contains control characters; type plain text.")
    limit = DEFAULT_MAX_TEXT if max_len is None else max_len
    if len(value) > limit:
        raise _bad(f"`{name}` is too long: at most {limit} characters (you gave {len(value)}).")
    if min_len is not None and len(value.strip()) < min_len:
        if min_len <= 1:
            raise _bad(f"`{name}` can't be empty.")
        raise _bad(f"`{name}` is too short: at least {min_len} characters.")
    return value


def _check_range(name: str, value: Any, rng: Any) -> None:
    if rng.annotation is str:
        if not isinstance(value, str):
            raise _bad(f"`{name}` must be text.")
        check_text(name, value, min_len=int(rng.min) if rng.min is not None else None,
                   max_len=int(rng.max) if rng.max is not None else None)
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"`{name}` must be a number.")
    if rng.annotation is int and not isinstance(value, int):
        raise _bad(f"`{name}` must be a whole number.")
    if value != value or value in (float("inf"), float("-inf")):
        raise _bad(f"`{name}` must be a finite number.")
    if rng.min is not None and value < rng.min:
        raise _bad(f"`{name}` must be at least {rng.min}.")
    if rng.max is not None and value > rng.max:
        raise _bad(f"`{name}` must be at most {rng.max}.")


def _literal_values(converter: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(converter) is typing.Literal:
        return typing.get_args(converter)
    return None


def _check_one(name: str, value: Any, converter: Any) -> None:
    if value is None:
        return
    if isinstance(converter, _RANGE):
        _check_range(name, value, converter)
        return
    literal = _literal_values(converter)
    if literal is not None:
        if value not in literal:
            raise _bad(f"`{name}` must be one of: {', '.join(str(v) for v in literal)}.")
        return
    origin = typing.get_origin(converter)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(converter):
            if isinstance(arg, _RANGE) or _literal_values(arg) is not None:
                _check_one(name, value, arg)
                return
    if isinstance(value, str):
        check_text(name, value)


def validate_arguments(params: Mapping[str, commands.Parameter], bound: Mapping[str, Any]) -> None:
    """Check every bound argument against its parameter (see the module docstring).

    Parameters
    ----------
    params:
        The command's ``clean_params`` (name → discord.py ``Parameter``).
    bound:
        The arguments the callback is about to receive, by name.

    Raises
    ------
    CommandError
        ``COMMAND_BAD_ARGUMENT`` naming the argument and the limit.
    """
    for name, param in params.items():
        if name not in bound:
            continue
        value = bound[name]
        if param.kind is inspect.Parameter.VAR_POSITIONAL and isinstance(value, tuple | list):
            for item in value:
                _check_one(name, item, param.converter)
            continue
        _check_one(name, value, param.converter)
