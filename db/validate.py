"""Checks on values before they reach PostgreSQL, so bad input gets a clear error and not a query failure.

Text that users type (alias names, prefixes, feedback, reminders) is checked here with the limits
below. Every refusal is a :class:`~innkeeper.errors.DatabaseError` with ``DB_BAD_VALUE`` whose
``user_message`` can be shown to the user as it is.
"""

from __future__ import annotations

import re
from typing import Any

from innkeeper.errors import DatabaseError, ErrorCode

__all__ = (
    "MAX_PREFIX", "MAX_ALIAS_NAME", "MAX_ALIAS_COMMAND", "MAX_FEEDBACK", "MAX_REMINDER", "MAX_COMMAND_NAME",
    "MAX_LOCALE", "MAX_ACTION", "MAX_TARGET", "MAX_ERROR_MESSAGE", "MAX_FEATURE_NAME", "INT64_MIN", "INT64_MAX",
    "bad", "text", "snowflake", "opt_snowflake", "level", "json_value", "sanitize",
)

MAX_PREFIX = 16
MAX_ALIAS_NAME = 32
MAX_ALIAS_COMMAND = 2000
MAX_FEEDBACK = 4000
MAX_REMINDER = 1500
MAX_COMMAND_NAME = 100
MAX_LOCALE = 16
MAX_ACTION = 64
MAX_TARGET = 200
MAX_ERROR_MESSAGE = 4000
MAX_FEATURE_NAME = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def bad(field: str, why: str) -> DatabaseError:
    return DatabaseError(f"{field} {why}", code=ErrorCode.DB_BAD_VALUE, user_message=f"The {field} {why}.",
                         field=field)


def text(field: str, value: object, max_len: int, *, min_len: int = 1, pattern: re.Pattern[str] | None = None,
         pattern_help: str = "") -> str:
    """Return ``value`` when it is a storable string of ``min_len``..``max_len`` characters.

    Refused: non-strings, NUL characters (PostgreSQL ``text`` cannot hold them), lone surrogates
    (not valid UTF-8), and strings that are too short or too long or do not match ``pattern``.
    """
    if not isinstance(value, str):
        raise bad(field, "must be text")
    if "\x00" in value:
        raise bad(field, "cannot contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(field, "contains characters that are not valid Unicode") from None
    if len(value) < min_len:
        raise bad(field, "cannot be empty" if min_len == 1 else f"must be at least {min_len} characters")
    if len(value) > max_len:
        raise bad(field, f"must be at most {max_len} characters (got {len(value)})")
    if pattern is not None and not pattern.fullmatch(value):
        raise bad(field, f"must be {pattern_help}" if pattern_help else "has an invalid format")
    return value


def sanitize(value: str, max_len: int) -> str:
    """Make any string storable: NULs and lone surrogates become U+FFFD, then truncate to ``max_len``.

    Used only for diagnostic text (error events) that must never be refused.
    """
    cleaned = "".join("\ufffd" if ch == "\x00" or "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return cleaned if len(cleaned) <= max_len else cleaned[: max_len - 1] + "…"


def snowflake(field: str, value: object) -> int:
    """A Discord id (or any bigint): an ``int`` within PostgreSQL's ``bigint`` range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, "must be an integer id")
    if not INT64_MIN <= value <= INT64_MAX:
        raise bad(field, "is out of range for an id")
    return value


def opt_snowflake(field: str, value: object) -> int | None:
    return None if value is None else snowflake(field, value)


def level(field: str, value: object) -> int:
    """A permission level: 0 everyone, 1 mod, 2 admin, 3 owner."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise bad(field, "must be a permission level from 0 (everyone) to 3 (owner)")
    return value


def json_value(field: str, value: Any, *, depth: int = 0) -> Any:
    """Check that ``value`` is JSON PostgreSQL can store in ``jsonb`` and read back unchanged.

    Allowed: ``None``, ``bool``, ``str`` (as :func:`text`), ``int`` within 64 bits, finite floats,
    lists, and dicts with string keys, nested at most 16 deep.
    """
    if depth > 16:
        raise bad(field, "is nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return snowflake(field, value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise bad(field, "cannot contain NaN or infinity")
        return value
    if isinstance(value, str):
        return text(field, value, 100_000, min_len=0)
    if isinstance(value, list | tuple):
        return [json_value(field, v, depth=depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[text(field + " key", k, 256, min_len=0)] = json_value(field, v, depth=depth + 1)
        return out
    raise bad(field, f"cannot store a {type(value).__name__}")
