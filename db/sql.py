"""Small helpers for building SQL with pypika while keeping every value a bound parameter.

pypika renders identifiers and structure; values never enter the SQL text. :class:`Params` hands
out ``$1, $2, ...`` placeholders and collects the values in the same order, so a builder returns
``(sql, args)`` ready for the funnel::

    p = Params()
    q = Query.from_(t).select(t.id).where(t.guild_id == p.add(guild_id)).limit(p.add(limit))
    rows = await db.fetch("feedback.list", q.get_sql(), *p.values)
"""

from __future__ import annotations

from typing import Any

from pypika import Parameter

__all__ = ("Params",)


class Params:
    """Numbered ``$n`` parameters for asyncpg, in the order they were added."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> Parameter:
        """Bind ``value`` and return its placeholder."""
        self.values.append(value)
        return Parameter(f"${len(self.values)}")

    def __len__(self) -> int:
        return len(self.values)
