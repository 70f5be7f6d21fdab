"""Command aliases: a short name that expands to a command line, for a whole guild or for one user.

``(scope, scope_id, name)`` is unique. When a user invokes a name, their own alias wins over the
guild's (:func:`resolve_alias`). Each scope holds at most :data:`MAX_ALIASES_PER_SCOPE` aliases.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pypika import Order, Table
from pypika.functions import Count

from innkeeper.errors import DatabaseError, ErrorCode

from . import validate as v
from .sql import P1, P2, P3, P4, P5, P6, Cast, PgQuery, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = ("Alias", "Scope", "MAX_ALIASES_PER_SCOPE", "create_alias", "get_alias", "resolve_alias", "list_aliases",
           "delete_alias", "COLUMNS")

Scope = Literal["guild", "user"]
MAX_ALIASES_PER_SCOPE = 200


@dataclass(frozen=True, slots=True)
class Alias:
    id: int
    scope: Scope
    scope_id: int
    name: str
    command: str
    created_by: int | None
    created_at: dt.datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Alias:
        return cls(r["id"], r["scope"], r["scope_id"], r["name"], r["command"], r["created_by"], r["created_at"])


_aliases = Table("aliases")
#: The columns an :class:`Alias` is read from (also what a user's data export holds).
COLUMNS = (_aliases.id, _aliases.scope, _aliases.scope_id, _aliases.name, _aliases.command, _aliases.created_by,
            _aliases.created_at)
_IN_SCOPE = (_aliases.scope == P1) & (_aliases.scope_id == P2)
_NAMED = _IN_SCOPE & (_aliases.name == P3)
# One statement: the cap and the uniqueness are checked where the row is written.
_CREATE = built(
    PgQuery.into(_aliases).columns(_aliases.scope, _aliases.scope_id, _aliases.name, _aliases.command,
                                   _aliases.created_by)
    .select(Cast(P1, "text"), Cast(P2, "bigint"), Cast(P3, "text"), Cast(P4, "text"), Cast(P5, "bigint"))
    .where(PgQuery.from_(_aliases).select(Count("*")).where(_IN_SCOPE) < P6)
    .on_conflict(_aliases.scope, _aliases.scope_id, _aliases.name).do_nothing()
    .returning(*COLUMNS)
)
_EXISTS = built(PgQuery.from_(_aliases).select(1).where(_NAMED))
_GET = built(PgQuery.from_(_aliases).select(*COLUMNS).where(_NAMED))
# The user's own alias ($2) wins over the guild's ($1).
_RESOLVE = built(
    PgQuery.from_(_aliases).select(*COLUMNS)
    .where(((_aliases.scope == "user") & (_aliases.scope_id == P2) & (_aliases.name == P3))
           | ((_aliases.scope == "guild") & (_aliases.scope_id == P1) & (_aliases.name == P3)))
    .orderby(_aliases.scope == "user", order=Order.desc).limit(1)
)
_LIST = built(PgQuery.from_(_aliases).select(*COLUMNS).where(_IN_SCOPE).orderby(_aliases.name))
_DELETE = built(PgQuery.from_(_aliases).delete().where(_NAMED))


def _scope(scope: str) -> Scope:
    if scope not in ("guild", "user"):
        raise v.bad("alias scope", "must be 'guild' or 'user'")
    return scope  # type: ignore[return-value]


def _name(name: str) -> str:
    v.text("alias name", name, v.MAX_ALIAS_NAME)
    if any(ch.isspace() for ch in name):
        raise v.bad("alias name", "cannot contain spaces")
    return name


async def create_alias(db: Database, scope: Scope, scope_id: int, name: str, command: str, *, created_by: int,
                       conn: Conn | None = None) -> Alias:
    """Create an alias.

    Raises
    ------
    DatabaseError
        ``DB_BAD_VALUE`` for an invalid name or command (name: 1-32 characters without spaces;
        command: 1-2000 characters), ``DB_CONSTRAINT`` when the name is taken in that scope or the
        scope already has :data:`MAX_ALIASES_PER_SCOPE` aliases.
    """
    args = (_scope(scope), v.snowflake("scope id", scope_id), _name(name),
            v.text("alias command", command, v.MAX_ALIAS_COMMAND), v.snowflake("creator id", created_by))
    row = await db.fetchrow("aliases.create", _CREATE, *args, MAX_ALIASES_PER_SCOPE, conn=conn, idempotent=False)
    if row is not None:
        return Alias.from_record(row)
    if await db.fetchval("aliases.exists", _EXISTS, *args[:3], conn=conn):
        raise DatabaseError(f"alias {name!r} already exists in {scope} {scope_id}", code=ErrorCode.DB_CONSTRAINT,
                            user_message=f"An alias named {name!r} already exists.")
    raise DatabaseError(f"{scope} {scope_id} already has {MAX_ALIASES_PER_SCOPE} aliases",
                        code=ErrorCode.DB_CONSTRAINT,
                        user_message=f"You can have at most {MAX_ALIASES_PER_SCOPE} aliases; delete one first.")


async def get_alias(db: Database, scope: Scope, scope_id: int, name: str, *, conn: Conn | None = None) -> Alias | None:
    """The alias ``name`` in exactly this scope."""
    row = await db.fetchrow("aliases.get", _GET, _scope(scope), v.snowflake("scope id", scope_id), _name(name),
                            conn=conn)
    return Alias.from_record(row) if row else None


async def resolve_alias(db: Database, guild_id: int | None, user_id: int, name: str, *,
                        conn: Conn | None = None) -> Alias | None:
    """What ``name`` means for ``user_id`` in ``guild_id``: their own alias first, then the guild's."""
    row = await db.fetchrow("aliases.resolve", _RESOLVE, v.opt_snowflake("guild id", guild_id),
                            v.snowflake("user id", user_id), _name(name), conn=conn)
    return Alias.from_record(row) if row else None


async def list_aliases(db: Database, scope: Scope, scope_id: int, *, conn: Conn | None = None) -> list[Alias]:
    """Every alias in the scope, by name."""
    rows = await db.fetch("aliases.list", _LIST, _scope(scope), v.snowflake("scope id", scope_id), conn=conn)
    return [Alias.from_record(r) for r in rows]


async def delete_alias(db: Database, scope: Scope, scope_id: int, name: str, *, conn: Conn | None = None) -> bool:
    """Delete the alias; True when it existed."""
    status = await db.execute("aliases.delete", _DELETE, _scope(scope), v.snowflake("scope id", scope_id),
                              _name(name), conn=conn, idempotent=True)
    return status.endswith(" 1")
