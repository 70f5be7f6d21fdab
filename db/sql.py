"""Building SQL with pypika, once, at import time, with every value a bound ``$n`` parameter.

Each query module builds its statements when it is imported, into module-level constants that
read like the table's shape::

    _feedback = Table("feedback")
    _GET = built(PgQuery.from_(_feedback).select(*_COLUMNS).where(_feedback.id == P1))
    row = await db.fetchrow("feedback.get", _GET, feedback_id)

so running a query pays nothing for building it. pypika renders identifiers and structure; values
never enter the SQL text: :data:`P1`, :data:`P2`, ... (:func:`param`) are asyncpg's ``$n``
placeholders.

The mark of built SQL
---------------------
:data:`Sql` is a ``NewType`` of ``str``: asyncpg accepts exact ``str`` only, so the mark must not
exist at run time. The funnel (:class:`db.pool.Database`) takes ``Sql``, so mypy refuses hand-written
SQL text there. :func:`built` (and the two DDL helpers below) are the only places that make an
``Sql``; each records the text it returns, so :func:`is_built` lets the tests prove that every query
constant and every statement sent to the funnel went through them. (The record is of texts: a
hand-written copy of exactly what pypika renders would pass it, so a test also scans ``db/`` for
SQL written as string literals.)

What pypika lacks, and the helpers here
---------------------------------------
* :class:`PgQuery` and :class:`PgBuilder`: pypika's ``PostgreSQLQuery`` and its builder, typed so
  that mypy follows a chain of builder calls (pypika's own types lose ``.returning()``,
  ``.on_conflict()`` and ``.for_update(skip_locked=...)`` after the first generic call).
* :data:`Cast`, :data:`Now`, :data:`Coalesce`, :data:`AtTimezone`: pypika's own, which it leaves
  unannotated, under typed names (so ``mypy --strict`` checks their callers).
* Terms for what pypika cannot say: :class:`Infix`, a binary operator such as jsonb ``||``;
  :class:`NamedArg`, ``make_interval(secs => $2)``; :class:`TableFunction`, a set-returning
  function in ``FROM`` with a column definition list,
  ``jsonb_to_recordset($1::jsonb) AS x(used_at timestamptz, ...)``; :class:`Subscript`, an array
  element, ``(xpath(...))[1]``. They are leaves for pypika's tree walks (``fields_()``,
  ``replace_table``): use them where pypika only renders them, as the query modules do.
* :func:`create_database` and :func:`drop_database`: ``CREATE DATABASE`` has no pypika builder at
  all (the name is quoted as pypika quotes identifiers), and pypika's ``DROP DATABASE`` has no
  ``WITH (FORCE)``, which is appended. Both are built per call: the name is only known then. They
  are the only SQL in ``db/`` that pypika does not build entirely.
* :class:`Params`: numbered placeholders with their values, for a builder whose filters vary per
  call. Prefer building the few variants at import time, as ``db.feedback`` and ``db.error_events``
  do for their list queries.

Everything else (``ON CONFLICT``, ``RETURNING``, ``FOR UPDATE SKIP LOCKED``, ``WITH`` around
``INSERT``/``UPDATE``, ``UPDATE ... FROM``, jsonb ``-``, casts, ``= ANY(...)``, ``FILTER``,
``AT TIME ZONE``, ``UNION``, joins, ``CREATE TABLE``) is pypika's own. Nothing in ``db/`` uses
``COPY`` (backups run ``pg_dump``/``pg_restore``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NewType, Protocol, Self

from pypika import Field, Parameter, PostgreSQLQuery, Table
from pypika import functions as _fn
from pypika import terms as _terms
from pypika.dialects import PostgreSQLQueryBuilder
from pypika.queries import Database, Query, Selectable
from pypika.terms import Function, Term
from pypika.utils import format_alias_sql, format_quotes

from innkeeper.errors import DatabaseError, ErrorCode

__all__ = (
    "Sql", "built", "is_built", "PgQuery", "PgBuilder", "Cast", "Now", "Coalesce", "AtTimezone", "Exists", "param",
    "placeholders", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "EXCLUDED", "Infix", "NamedArg",
    "TableFunction", "Subscript", "quote_ident", "create_database", "drop_database", "rename_database",
    "allow_connections", "Params",
)

#: SQL text made by :func:`built` (or a DDL helper of this module); the funnel accepts nothing else.
Sql = NewType("Sql", str)

_BUILT: set[str] = set()


class _Buildable(Protocol):
    def get_sql(self, **kwargs: Any) -> str: ...


def _mark(text: str) -> Sql:
    _BUILT.add(text)
    return Sql(text)


def built(query: _Buildable) -> Sql:
    """The SQL text of a pypika query, marked as built. Call it at import time, into a constant."""
    return _mark(query.get_sql())


def is_built(text: str) -> bool:
    """True when ``text`` came from :func:`built` or a DDL helper of this module."""
    return text in _BUILT


class PgBuilder(PostgreSQLQueryBuilder):
    """pypika's PostgreSQL query builder, typed so that a chain of builder calls keeps its type.

    pypika's ``@builder`` types each method as returning the class that defines it, so after
    ``.where()`` mypy would see the generic ``QueryBuilder``, where ``.returning()`` or
    ``.on_conflict()`` resolve to a column (``Selectable.__getattr__``). The declarations below
    (for mypy only; pypika's own methods run) return ``Self``. ``limit`` also takes a placeholder:
    pypika types it as ``int`` but renders any term, so ``.limit(P3)`` is ``LIMIT $3``.
    """

    if TYPE_CHECKING:
        def with_(self, selectable: str | Selectable, name: str) -> Self: ...
        def into(self, table: str | Table) -> Self: ...
        def update(self, table: str | Table) -> Self: ...
        def from_(self, selectable: Selectable | Query | str) -> Self: ...
        def columns(self, *terms: Any) -> Self: ...
        def insert(self, *terms: Any) -> Self: ...
        def select(self, *terms: Any) -> Self: ...
        def distinct(self) -> Self: ...
        def delete(self) -> Self: ...
        def set(self, field: Field | str, value: Any) -> Self: ...
        def where(self, criterion: Term) -> Self: ...
        def groupby(self, *terms: str | int | Term) -> Self: ...
        def orderby(self, *fields: Any, **kwargs: Any) -> Self: ...
        def limit(self, limit: int | Term) -> Self: ...
        def for_update(self, nowait: bool = False, skip_locked: bool = False, of: tuple[str, ...] = ()) -> Self: ...
        def on_conflict(self, *target_fields: str | Term) -> Self: ...
        def do_nothing(self) -> Self: ...
        def do_update(self, update_field: str | Field, update_value: Any | None = None) -> Self: ...
        def returning(self, *terms: Any) -> Self: ...


class PgQuery(PostgreSQLQuery):
    """pypika's ``PostgreSQLQuery``, building :class:`PgBuilder` queries."""

    @classmethod
    def _builder(cls, **kwargs: Any) -> PgBuilder:
        return PgBuilder(**kwargs)

    @classmethod
    def from_(cls, table: Selectable | str, **kwargs: Any) -> PgBuilder:
        return cls._builder(**kwargs).from_(table)

    @classmethod
    def into(cls, table: Table | str, **kwargs: Any) -> PgBuilder:
        return cls._builder(**kwargs).into(table)

    @classmethod
    def update(cls, table: str | Table, **kwargs: Any) -> PgBuilder:
        return cls._builder(**kwargs).update(table)

    @classmethod
    def select(cls, *terms: int | float | str | bool | Term, **kwargs: Any) -> PgBuilder:
        return cls._builder(**kwargs).select(*terms)

    @classmethod
    def with_(cls, table: str | Selectable, name: str, **kwargs: Any) -> PgBuilder:
        return cls._builder(**kwargs).with_(table, name)


#: ``CAST(term AS type)``
Cast: Callable[[Any, str], Function] = _fn.Cast
#: ``NOW()``
Now: Callable[[], Function] = _fn.Now
#: ``COALESCE(term, default, ...)``
Coalesce: Callable[..., Function] = _fn.Coalesce
#: ``term AT TIME ZONE 'zone'``
AtTimezone: Callable[[Term, str], Term] = _terms.AtTimezone
#: ``EXISTS (query)`` (``.negate()`` for ``NOT EXISTS``)
Exists: Callable[[Any], _terms.Criterion] = _terms.ExistsCriterion


def param(n: int) -> Parameter:
    """asyncpg's ``$n`` placeholder."""
    return Parameter(f"${n}")


def placeholders() -> Iterator[Parameter]:
    """``$1, $2, ...`` in order, for a builder that numbers its optional filters as it adds them."""
    return map(param, itertools.count(1))


P1, P2, P3, P4, P5, P6, P7, P8, P9 = (param(n) for n in range(1, 10))

#: The row proposed for insertion, inside ``ON CONFLICT ... DO UPDATE``.
EXCLUDED = Table("excluded")


class Infix(Term):
    """``(left OPERATOR right)`` for an operator pypika has no term for, e.g. jsonb ``||``."""

    def __init__(self, left: Term, operator: str, right: Term, alias: str | None = None) -> None:
        super().__init__(alias)
        self.left, self.operator, self.right = left, operator, right

    def get_sql(self, **kwargs: Any) -> str:
        inner = {k: v for k, v in kwargs.items() if k != "with_alias"}
        sql = f"({self.left.get_sql(**inner)} {self.operator} {self.right.get_sql(**inner)})"
        return format_alias_sql(sql, self.alias, **kwargs) if kwargs.get("with_alias") else sql


class NamedArg(Term):
    """``name => value``, a named argument of a function call."""

    def __init__(self, name: str, value: Term) -> None:
        super().__init__()
        self.name, self.value = name, value

    def get_sql(self, **kwargs: Any) -> str:
        kwargs.pop("with_alias", None)
        return f"{self.name} => {self.value.get_sql(**kwargs)}"


class TableFunction(Selectable):
    """A set-returning function in ``FROM``, optionally with an alias and a column definition list.

    ``TableFunction(Function("jsonb_to_recordset", Cast(P1, "jsonb")), "x", [("id", "bigint")])``
    renders ``jsonb_to_recordset(CAST($1 AS JSONB)) AS "x"("id" bigint)``; its columns are fields,
    ``x.id``, like a table's.
    """

    def __init__(self, function: Function, alias: str | None = None, columns: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(alias or "")
        self.function = function
        self.columns = tuple(columns)

    def get_sql(self, quote_char: str | None = '"', **kwargs: Any) -> str:
        sql = self.function.get_sql(quote_char=quote_char)
        if self.alias:
            sql += f" AS {format_quotes(self.alias, quote_char)}"
        if self.columns:
            sql += "(" + ", ".join(f"{format_quotes(name, quote_char)} {type_}" for name, type_ in self.columns) + ")"
        return sql


class Subscript(Term):
    """``(array)[index]``: one element of an array value (1-based, as in PostgreSQL)."""

    def __init__(self, array: Term, index: int, alias: str | None = None) -> None:
        super().__init__(alias)
        self.array, self.index = array, int(index)

    def get_sql(self, **kwargs: Any) -> str:
        inner = {k: v for k, v in kwargs.items() if k != "with_alias"}
        sql = f"({self.array.get_sql(**inner)})[{self.index}]"
        return format_alias_sql(sql, self.alias, **kwargs) if kwargs.get("with_alias") else sql


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (a database or table name that cannot be a bound parameter)."""
    if "\x00" in name:
        raise DatabaseError("identifiers cannot contain NUL", code=ErrorCode.DB_BAD_VALUE)
    return format_quotes(name, '"')


def create_database(name: str) -> Sql:
    """``CREATE DATABASE "name"`` (pypika has no builder for it; the name is quoted as pypika quotes)."""
    return _mark(f"CREATE DATABASE {quote_ident(name)}")


def drop_database(name: str, *, force: bool = False) -> Sql:
    """pypika's ``DROP DATABASE "name"``, with PostgreSQL's ``WITH (FORCE)`` appended when ``force``."""
    quote_ident(name)  # refuses NUL
    sql = PostgreSQLQuery.drop_database(Database(name)).get_sql()
    return _mark(sql + " WITH (FORCE)" if force else sql)


def rename_database(name: str, new_name: str) -> Sql:
    """``ALTER DATABASE "name" RENAME TO "new_name"`` (pypika has no builder for it)."""
    return _mark(f"ALTER DATABASE {quote_ident(name)} RENAME TO {quote_ident(new_name)}")


def allow_connections(name: str, allow: bool) -> Sql:
    """``ALTER DATABASE "name" ALLOW_CONNECTIONS true|false`` (false keeps everyone out, superusers too)."""
    return _mark(f"ALTER DATABASE {quote_ident(name)} ALLOW_CONNECTIONS {'true' if allow else 'false'}")


class Params:
    """Numbered ``$n`` parameters for asyncpg, in the order they were added, with their values.

    For a builder whose filters vary per call (it pays for building at each call, and the
    registry of built SQL keeps one entry per distinct shape)::

        p = Params()
        q = PgQuery.from_(t).select(t.id).where(t.guild_id == p.add(guild_id))
        rows = await db.fetch("name", built(q), *p.values)
    """

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> Parameter:
        """Bind ``value`` and return its placeholder."""
        self.values.append(value)
        return param(len(self.values))

    def __len__(self) -> int:
        return len(self.values)
