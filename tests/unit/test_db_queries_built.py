"""Every query in ``db/`` is built by pypika (through ``db.sql.built``), none is hand-written text.

Three checks, each able to fail on its own:

* every SQL text a ``db`` module holds at module level (constants, and the tuples, lists and dicts
  they hold) went through :func:`db.sql.built` or a DDL helper of :mod:`db.sql`;
* no ``db`` module but :mod:`db.sql` writes SQL as a string literal or f-string (outside
  docstrings), so there is no hand-written statement to send anywhere, funnel or bare connection;
* no ``db`` module but :mod:`db.sql` makes an ``Sql`` itself (``Sql`` is a ``NewType``, so mypy would
  let ``Sql("SELECT ...")`` through).

The funnel's own signature takes ``Sql`` (mypy refuses plain text), and
``tests/integration/test_db_funnel_built.py`` checks at run time, on a real database, that every
statement each db function sends through the funnel is a built one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from db.sql import is_built
from db.testing import looks_like_sql, sql_constants

DB_DIR = Path(__file__).resolve().parents[2] / "db"
# db/sql.py renders what pypika cannot (CREATE DATABASE, WITH (FORCE)) and is the one place allowed to.
SCANNED = sorted(p for p in DB_DIR.glob("*.py") if p.name != "sql.py")
# A literal is SQL when it starts with a statement keyword in capitals, as this project writes SQL, or in
# any case with a clause or a placeholder after it (so prose such as "create database" is not).
_STATEMENT = re.compile(r"^[\s(]*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|LOCK|COPY)\b")
_CLAUSE = re.compile(r"\b(from|into|values|where|returning|set)\b|\$\d", re.IGNORECASE)


def reads_like_sql(text: str) -> bool:
    return bool(_STATEMENT.match(text)) or (looks_like_sql(text) and bool(_CLAUSE.search(text)))


def test_every_sql_constant_is_built() -> None:
    constants = sql_constants()
    # Not vacuous: the finder sees plain constants, dict and tuple entries, and a UNION in parentheses.
    for where in ("guilds._GET", "usage.INSERT_BATCH", "audit._FOR_USER", "privacy._RETENTION['feedback']",
                  "privacy._ERASE[0][1]", "migrate._CREATE_TABLE", "backup._COUNT_TABLES", "pool._HEALTH"):
        assert where in constants, where
    assert len(set(constants.values())) > 100
    not_built = sorted(where for where, text in constants.items() if not is_built(text))
    assert not not_built, f"hand-written SQL constants: {not_built}"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_literals(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every string literal or f-string in ``source`` that reads like SQL."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings or id(node) in in_fstring:
                continue
            text = node.value
        else:
            continue
        if reads_like_sql(text):
            found.append((node.lineno, text))
    return found


def test_the_literal_finder_finds_hand_written_sql() -> None:
    source = '''
"""SELECT in a module docstring is prose."""
GET = "SELECT id FROM t WHERE id = $1"
async def f(conn, name):
    """DELETE in a docstring too."""
    await conn.execute(f"DROP DATABASE {name}")
    await conn.fetch("  (SELECT 1) UNION (SELECT 2)")
    await conn.fetch(GET, "guilds.get")
    await conn.execute("delete from t where id = $1", 1, query="create database")
    print("drop and recreate the target when it is not empty")
'''
    assert [line for line, _ in sql_literals(source)] == [3, 6, 7, 9]


def test_no_hand_written_sql_in_db_modules() -> None:
    assert len(SCANNED) >= 15
    found = [f"{path.name}:{line}: {text[:60]!r}" for path in SCANNED for line, text in sql_literals(path.read_text())]
    assert not found, "SQL written by hand instead of built with pypika:\n" + "\n".join(found)


def test_only_db_sql_marks_text_as_built() -> None:
    makers = []
    for path in SCANNED:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in ("Sql", "_mark"):
                    makers.append(f"{path.name}:{node.lineno}")
    assert not makers, f"only db.sql may make Sql values: {makers}"
