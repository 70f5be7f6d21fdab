"""Checks of the fields clients send in gateway payloads, shared by the opcode handlers."""

from __future__ import annotations

__all__ = ("is_int", "snowflake_of")


def is_int(value: object) -> bool:
    """Whether ``value`` is a JSON integer (``bool`` is not one)."""
    return type(value) is int


def snowflake_of(value: object) -> int | None:
    """A snowflake sent as an integer or a string of digits, or None when it is not one."""
    if type(value) is int and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 21:
        return int(value)
    return None
