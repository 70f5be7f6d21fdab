"""Pure parts of the data layer: validation, backoff, encryption, error translation, builders, discovery."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db import error_events as elog
from db import error_translation as dberrors
from db import feedback, validate
from db.crypto import KeyRing, generate_key, row_binding
from db.migrate import REQUIRED_SCHEMA_VERSION, discover, quote_ident
from db.sql import Params
from db.testing import legacy_value, make_keys
from innkeeper.errors import ConfigError, DatabaseError, ErrorCode


@pytest.mark.parametrize("value, why", [
    ("a\x00b", "NUL"), ("\ud800", "not valid Unicode"), ("", "empty"), ("x" * 17, "at most 16"), (5, "must be text"),
])
def test_text_refusals_are_clear(value: object, why: str) -> None:
    with pytest.raises(DatabaseError) as info:
        validate.text("prefix", value, 16)
    assert info.value.code is ErrorCode.DB_BAD_VALUE
    assert why in info.value.message
    assert info.value.user_message.startswith("The prefix")


@given(st.text(max_size=300))
def test_text_accepts_or_refuses_but_never_alters(value: str) -> None:
    try:
        assert validate.text("feedback", value, 200) == value
    except DatabaseError as exc:
        assert exc.code is ErrorCode.DB_BAD_VALUE
        assert "\x00" in value or len(value) > 200 or value == "" or any("\ud800" <= c <= "\udfff" for c in value)


@given(st.text(max_size=50))
def test_sanitize_is_identity_on_clean_text(value: str) -> None:
    cleaned = validate.sanitize(value, 40)
    cleaned.encode("utf-8")
    assert "\x00" not in cleaned and len(cleaned) <= 40
    if "\x00" not in value and len(value) <= 40 and not any("\ud800" <= c <= "\udfff" for c in value):
        assert cleaned == value


def test_snowflake_and_level_bounds() -> None:
    assert validate.snowflake("id", 2**63 - 1) == 2**63 - 1
    for bad in (2**63, True, "5", 1.0):
        with pytest.raises(DatabaseError):
            validate.snowflake("id", bad)
    assert validate.level("level", 3) == 3
    for bad in (-1, 4, True):
        with pytest.raises(DatabaseError):
            validate.level("level", bad)


def test_json_value_refuses_what_jsonb_cannot_hold() -> None:
    assert validate.json_value("d", {"a": [1, 2.5, None, True, "x"]}) == {"a": [1, 2.5, None, True, "x"]}
    for bad in ({"a": "\x00"}, {"a": float("nan")}, {"a": 2**64}, {"a": object()}, {1: 2}):
        with pytest.raises(DatabaseError):
            validate.json_value("d", bad)


# --- encryption -------------------------------------------------------------------------------------
ROW = row_binding(17, 331234567890123456)


def test_keyring_round_trip_and_format() -> None:
    keys = make_keys("a", "b")
    token = keys.encrypt("héllo 'x' \x00", context="feedback.body", row=ROW)
    assert re.fullmatch(r"v2:a:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", token)
    assert keys.decrypt(token, context="feedback.body", row=ROW) == "héllo 'x' \x00"
    assert keys.encrypt("same", context="c", row=ROW) != keys.encrypt("same", context="c", row=ROW)  # fresh nonce
    assert keys.key_id_of(keys.encrypt("x", context="c", row=ROW, key_id="b")) == "b"


def test_keyring_old_keys_decrypt_and_missing_key_is_named() -> None:
    old = make_keys("old")
    token = old.encrypt("secret", context="reminders.body", row=ROW)
    rotated = make_keys("new", "old")
    assert rotated.decrypt(token, context="reminders.body", row=ROW) == "secret"
    assert not rotated.is_current(token)
    assert rotated.is_current(rotated.encrypt("x", context="c", row=ROW))
    with pytest.raises(ConfigError) as info:
        make_keys("new").decrypt(token, context="reminders.body", row=ROW)
    assert "'old'" in info.value.message and info.value.context["variable"] == "INNKEEPER_ENCRYPTION_KEYS"


def test_keyring_detects_tampering_wrong_column_and_wrong_row() -> None:
    keys = make_keys()
    token = keys.encrypt("secret", context="feedback.body", row=ROW)
    for context, row in (("reminders.body", ROW), ("feedback.body", row_binding(18, 331234567890123456)),
                         ("feedback.body", row_binding(17, 441234567890123456)),
                         ("feedback.body", row_binding(17, None))):
        with pytest.raises(DatabaseError) as info:  # copied into another column, another row, or re-owned
            keys.decrypt(token, context=context, row=row)
        assert info.value.code is ErrorCode.DB_BAD_VALUE
    head, _, ct = token.rpartition(":")
    for i in range(len(base64.b64decode(ct))):  # any flipped bit anywhere is caught
        raw = bytearray(base64.b64decode(ct))
        raw[i] ^= 0x01
        with pytest.raises(DatabaseError):
            keys.decrypt(f"{head}:{base64.b64encode(bytes(raw)).decode()}", context="feedback.body", row=ROW)
    with pytest.raises(DatabaseError):
        keys.decrypt("plaintext", context="feedback.body", row=ROW)


def test_values_from_before_row_binding_are_read_only_by_the_upgrade() -> None:
    keys = make_keys()
    old = legacy_value("t1", "from before", "feedback.body")
    assert keys.is_legacy(old)
    with pytest.raises(DatabaseError) as info:  # an ordinary read never trusts a value not bound to its row
        keys.decrypt(old, context="feedback.body", row=ROW)
    assert info.value.code is ErrorCode.DB_LEGACY_CIPHERTEXT
    assert keys.decrypt(old, context="feedback.body", row=ROW, legacy=True) == "from before"
    with pytest.raises(DatabaseError):
        keys.decrypt(old, context="reminders.body", row=ROW, legacy=True)  # still bound to its column


def test_keyring_parse_errors_name_the_variable() -> None:
    for entries, fragment in ([(), "is not set"], [("nokey",), "keyid=base64key"], [("k=!!!",), "not valid base64"],
                              [("k=AAAA",), "32 bytes"], [(generate_key("k"), generate_key("k")), "twice"]):
        with pytest.raises(ConfigError) as info:
            KeyRing.parse(entries)
        assert fragment in info.value.message
        assert info.value.context["variable"] == "INNKEEPER_ENCRYPTION_KEYS"
    entry = generate_key("k2")
    assert KeyRing.parse([entry, "dev"], allow_dev=True).key_ids == ("k2", "dev")


# --- error translation --------------------------------------------------------------------------------
@pytest.mark.parametrize("exc, code", [
    (asyncpg.UniqueViolationError("dup"), ErrorCode.DB_CONSTRAINT),
    (asyncpg.ForeignKeyViolationError("fk"), ErrorCode.DB_CONSTRAINT),
    (asyncpg.CheckViolationError("check"), ErrorCode.DB_BAD_VALUE),
    (asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'), ErrorCode.DB_BAD_VALUE),
    (asyncpg.NumericValueOutOfRangeError("out of range"), ErrorCode.DB_BAD_VALUE),
    (asyncpg.PostgresSyntaxError("syntax"), ErrorCode.DB_QUERY),
    (asyncpg.ConnectionDoesNotExistError("gone"), ErrorCode.DB_UNAVAILABLE),
    (asyncpg.CannotConnectNowError("starting"), ErrorCode.DB_UNAVAILABLE),
    (ConnectionRefusedError(111, "refused"), ErrorCode.DB_UNAVAILABLE),
    (asyncpg.InterfaceError("connection is closed"), ErrorCode.DB_UNAVAILABLE),
])
def test_translate_maps_to_codes(exc: Exception, code: ErrorCode) -> None:
    err = dberrors.translate(exc, query="q.name")
    assert err.code is code
    assert "q.name" in err.message
    assert err.__cause__ is exc


def test_nul_error_message_is_clear() -> None:
    err = dberrors.translate(asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
                             query="x")
    assert "NUL" in err.message


def test_retry_safety() -> None:
    assert dberrors.is_safe_to_retry(asyncpg.ConnectionDoesNotExistError("x"), idempotent=True)
    assert not dberrors.is_safe_to_retry(asyncpg.ConnectionDoesNotExistError("x"), idempotent=False)
    assert dberrors.is_safe_to_retry(asyncpg.InterfaceError("connection is closed"), idempotent=False)
    assert not dberrors.is_safe_to_retry(asyncpg.UniqueViolationError("dup"), idempotent=True)


# --- builders: values never enter the SQL text ---------------------------------------------------------
def test_params_number_in_order() -> None:
    p = Params()
    assert str(p.add("a")) == "$1" and str(p.add(5)) == "$2"
    assert p.values == ["a", 5] and len(p) == 2


@settings(max_examples=50)
@given(code=st.text(min_size=1, max_size=16), guild=st.integers(0, 2**63 - 1), before=st.integers(1, 2**63 - 1))
def test_error_list_builder_binds_every_value(code: str, guild: int, before: int) -> None:
    try:
        sql, args = elog.build_list_query(code=code, guild_id=guild, before_id=before, limit=7)
    except DatabaseError as exc:
        assert "\x00" in code or any("\ud800" <= c <= "\udfff" for c in code)
        assert exc.code is ErrorCode.DB_BAD_VALUE
        return
    assert args == [code, guild, before, 7]
    assert re.findall(r"\$\d+", sql) == ["$1", "$2", "$3", "$4"]
    assert "'" not in sql  # no literal was pasted in


def test_feedback_list_builder() -> None:
    sql, args = feedback.build_list_query(guild_id=9, statuses=("open", "acknowledged"), limit=10)
    assert args == [9, "open", "acknowledged", 10]
    assert '"status" IN ($2,$3)' in sql and sql.endswith("LIMIT $4")
    with pytest.raises(DatabaseError):
        feedback.build_list_query(statuses=("open'; DROP TABLE feedback; --",))  # type: ignore[arg-type]
    with pytest.raises(DatabaseError):
        feedback.build_list_query(limit=1000)


# --- migrations on disk ---------------------------------------------------------------------------------
def test_discover_project_migrations() -> None:
    migrations = discover()
    versions = [m.version for m in migrations]
    # ascending and unique; V5 is reserved for another branch of the same release (merged separately)
    assert versions == sorted(set(versions)) and set(range(1, 5)) <= set(versions)
    assert migrations[-1].version == REQUIRED_SCHEMA_VERSION
    assert all(len(m.checksum) == 64 for m in migrations)


def test_discover_refuses_bad_names_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "V1__a.sql").write_text("SELECT 1;")
    (tmp_path / "V1__b.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError) as info:
        discover(tmp_path)
    assert info.value.code is ErrorCode.DB_MIGRATION and "V1__a.sql" in info.value.message
    (tmp_path / "V1__b.sql").unlink()
    (tmp_path / "v2-bad.sql").write_text("SELECT 1;")
    with pytest.raises(DatabaseError) as info:
        discover(tmp_path)
    assert "v2-bad.sql" in info.value.message


def test_quote_ident() -> None:
    assert quote_ident('we"ird') == '"we""ird"'
    with pytest.raises(DatabaseError):
        quote_ident("a\x00")


def test_settings_drive_the_database_and_retention() -> None:
    from db.pool import Database
    from db.privacy import RetentionPolicy
    from innkeeper.settings import Settings

    s = Settings.from_env({"INNKEEPER_LOG_QUERIES": "1", "INNKEEPER_SLOW_QUERY_MS": "40", "INNKEEPER_DB_POOL_MAX": "3",
                           "INNKEEPER_RETENTION_USAGE_DAYS": "7", "INNKEEPER_RETENTION_REMINDERS_DAYS": "0"})
    db = Database.from_settings(s)
    assert (db.log_queries, db.slow_query_s, db.max_size) == (True, 0.04, 3)
    assert RetentionPolicy.from_settings(s) == RetentionPolicy(usage_days=7, errors_days=30, feedback_days=180,
                                                               reminders_days=0)
    assert Settings.from_env(s.as_env()).retention_usage_days == 7
    with pytest.raises(ConfigError):
        Settings.from_env({"INNKEEPER_RETENTION_ERRORS_DAYS": "-1"})


async def test_stopping_the_usage_recorder_mid_flush_writes_each_row_once() -> None:
    """A periodic flush whose INSERT already committed must not be cancelled into putting its rows back."""
    import asyncio

    from db.usage import UsageRecorder

    class SlowDb:
        def __init__(self) -> None:
            self.written: list[dict[str, object]] = []
            self.committed = asyncio.Event()
            self.finish = asyncio.Event()

        async def execute(self, name: str, sql: str, rows: list[dict[str, object]], **kwargs: object) -> str:
            self.written.extend(rows)  # the INSERT has committed …
            self.committed.set()
            await self.finish.wait()  # … and the answer is still on its way when stop() comes
            return f"INSERT 0 {len(rows)}"

    db = SlowDb()
    rec = UsageRecorder(db, interval=0.001)  # type: ignore[arg-type]
    await rec.start()
    rec.record(user_id=1, command="ping")
    rec.record(user_id=2, command="ping")
    await asyncio.wait_for(db.committed.wait(), 5)
    stopping = asyncio.create_task(rec.stop())
    await asyncio.sleep(0)  # stop() cancels the periodic loop while the INSERT is in flight
    db.finish.set()
    await asyncio.wait_for(stopping, 5)
    assert sorted(r["user_id"] for r in db.written) == [1, 2] and len(rec) == 0
