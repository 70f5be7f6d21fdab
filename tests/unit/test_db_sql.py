"""db.sql: the mark of built SQL and the few terms pypika lacks, rendered as PostgreSQL reads them."""

from __future__ import annotations

import pytest
from pypika import Order, Table
from pypika.terms import Function

from db.sql import (
    EXCLUDED,
    P1,
    P2,
    P3,
    Cast,
    Infix,
    NamedArg,
    PgBuilder,
    PgQuery,
    Subscript,
    TableFunction,
    built,
    create_database,
    drop_database,
    is_built,
    param,
    placeholders,
    quote_ident,
)
from innkeeper.errors import DatabaseError, ErrorCode

t = Table("things")


def test_built_marks_its_text_and_nothing_else() -> None:
    sql = built(PgQuery.from_(t).select(t.id).where(t.owner_id == P1))
    assert sql == 'SELECT "id" FROM "things" WHERE "owner_id"=$1'
    assert type(sql) is str  # asyncpg takes exact str only: the mark exists for mypy, not at run time
    assert is_built(sql)
    assert not is_built('SELECT "id" FROM "things" WHERE "owner_id"=$2')
    assert not is_built("SELECT id FROM things WHERE owner_id = $1")


def test_placeholders_number_in_order() -> None:
    assert [p.get_sql() for p in (P1, P2, P3, param(12))] == ["$1", "$2", "$3", "$12"]
    numbered = placeholders()
    assert [next(numbered).get_sql() for _ in range(3)] == ["$1", "$2", "$3"]


def test_pg_builder_keeps_postgresql_clauses_through_a_chain() -> None:
    q = (PgQuery.into(t).columns(t.id, t.tags).insert(P1, P2).on_conflict(t.id)
         .do_update(t.tags, Infix(t.tags, "||", EXCLUDED.tags)).returning(t.id, t.tags))
    assert isinstance(q, PgBuilder)
    assert q.get_sql() == ('INSERT INTO "things" ("id","tags") VALUES ($1,$2) ON CONFLICT ("id") DO UPDATE SET '
                           '"tags"=("things"."tags" || "excluded"."tags") RETURNING "id","tags"')
    locked = PgQuery.from_(t).select(t.id).orderby(t.due, order=Order.desc).limit(P3).for_update(skip_locked=True)
    assert locked.get_sql() == 'SELECT "id" FROM "things" ORDER BY "due" DESC LIMIT $3 FOR UPDATE SKIP LOCKED'


def test_named_argument_and_subscript() -> None:
    interval = Function("make_interval", NamedArg("secs", P2))
    assert interval.get_sql() == "make_interval(secs => $2)"
    first = Cast(Subscript(Function("xpath", "/n/text()", P1), 1), "text").as_("n")
    assert PgQuery.select(first).get_sql() == "SELECT CAST((xpath('/n/text()',$1))[1] AS TEXT) \"n\""


def test_table_function_with_and_without_a_column_list() -> None:
    rows = TableFunction(Function("jsonb_to_recordset", Cast(P1, "jsonb")), "x", [("id", "bigint"), ("tag", "text")])
    q = PgQuery.into(t).columns(t.id, t.tag).from_(rows).select(rows.id, rows.tag)
    assert q.get_sql() == ('INSERT INTO "things" ("id","tag") SELECT "x"."id","x"."tag" FROM '
                           'jsonb_to_recordset(CAST($1 AS JSONB)) AS "x"("id" bigint, "tag" text)')
    call = TableFunction(Function("make_thing", P1, P2))
    assert PgQuery.from_(call).select("id").get_sql() == 'SELECT "id" FROM make_thing($1,$2)'


def test_database_ddl_quotes_the_name() -> None:
    assert quote_ident('we"ird') == '"we""ird"'
    assert create_database('we"ird') == 'CREATE DATABASE "we""ird"'
    assert drop_database("x") == 'DROP DATABASE "x"'
    assert drop_database('a"b', force=True) == 'DROP DATABASE "a""b" WITH (FORCE)'
    assert is_built(create_database("y")) and is_built(drop_database("y", force=True))
    for make in (create_database, drop_database, quote_ident):
        with pytest.raises(DatabaseError) as info:
            make("a\x00b")
        assert info.value.code is ErrorCode.DB_BAD_VALUE
