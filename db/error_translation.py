"""Translate asyncpg's exceptions into :class:`~innkeeper.errors.DatabaseError` at the storage boundary.

Only this module knows asyncpg's exception tree. Everything above ``db/`` sees one exception type
with a stable :class:`~innkeeper.errors.ErrorCode`:

=====================  ==========================================================================
``DB_UNAVAILABLE``     the server is unreachable, restarting, refusing connections, or the
                       connection dropped (SQLSTATE classes 08, 57P, 53300, 3D000; socket errors)
``DB_CONSTRAINT``      a unique, foreign-key or exclusion constraint was violated (23505, 23503, 23P01)
``DB_BAD_VALUE``       a value the server (or asyncpg's encoder) cannot store: NUL bytes, invalid
                       UTF-8, numbers out of range, CHECK / NOT NULL violations (class 22, 23514,
                       23502)
``DB_QUERY``           anything else (syntax, permissions, deadlocks, timeouts of a statement)
=====================  ==========================================================================
"""

from __future__ import annotations

import asyncio

import asyncpg

from innkeeper.errors import DatabaseError, ErrorCode

__all__ = ("translate", "is_connection_error", "is_safe_to_retry")

_CONSTRAINT_STATES = frozenset({"23505", "23503", "23P01"})
_BAD_VALUE_STATES = frozenset({"23514", "23502"})
_UNAVAILABLE_STATES = frozenset({"53300", "3D000", "57P01", "57P02", "57P03"})


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the server or the connection is gone, not that the query was wrong."""
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed" is; misuse (an operation already in progress) is a bug, not an outage.
        return "closed" in str(exc)
    if isinstance(exc, OSError | asyncio.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    state = _sqlstate(exc)
    return state is not None and (state.startswith("08") or state in _UNAVAILABLE_STATES)


def is_safe_to_retry(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether a query that failed with ``exc`` may be sent again.

    A query that never reached the server (refused connection, a connection found closed before
    sending, the server restarting) is always safe. A connection that dropped *during* the query
    may or may not have committed it, so only idempotent queries (reads) are retried then.
    """
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
        return idempotent
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "released" in str(exc)
    if isinstance(exc, asyncpg.exceptions.CannotConnectNowError | asyncpg.exceptions.TooManyConnectionsError):
        return True
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError):
        return True
    state = _sqlstate(exc)
    if state in ("57P01", "57P02"):  # admin / crash shutdown: the query was cancelled with the session
        return idempotent
    return False


def translate(exc: BaseException, *, query: str) -> DatabaseError:
    """Turn any exception raised by asyncpg for the query named ``query`` into a :class:`DatabaseError`."""
    if isinstance(exc, DatabaseError):
        return exc
    state = _sqlstate(exc)
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if is_connection_error(exc):
        code = ErrorCode.DB_UNAVAILABLE
        message = f"database unavailable during {query}: {detail}"
        user = "The database is unavailable right now; please try again in a moment."
    elif state in _CONSTRAINT_STATES:
        code = ErrorCode.DB_CONSTRAINT
        constraint = getattr(exc, "constraint_name", None)
        message = f"{query} violates {constraint or 'a constraint'}: {detail}"
        user = "That already exists or refers to something that does not exist."
    elif state in _BAD_VALUE_STATES or (state or "").startswith("22") or isinstance(exc, asyncpg.DataError):
        code = ErrorCode.DB_BAD_VALUE
        if state == "22021" or "0x00" in detail or "\\u0000" in str(exc):
            detail = "text contains a NUL character or invalid UTF-8, which cannot be stored"
        message = f"{query} got a value the database cannot store: {detail}"
        user = "That value cannot be stored (it may be too long or contain unsupported characters)."
    else:
        code = ErrorCode.DB_QUERY
        message = f"{query} failed: {detail}"
        user = "A database error occurred."
    err = DatabaseError(message, code=code, user_message=user, query=query, sqlstate=state)
    err.__cause__ = exc
    return err
