"""Secrets stay out of text: URL passwords in errors and log lines, secret settings in repr and str."""

from __future__ import annotations

import io
import json
import logging

import pytest

from cluster.launcher import Launcher
from db.migrate import database_name
from innkeeper.errors import ConfigError, DatabaseError, ErrorCode, InnkeeperError
from innkeeper.logs import JSONFormatter, TextFormatter
from innkeeper.redact import redact_text, redact_url
from innkeeper.settings import Settings

PASSWORD = "hunter2-Very-Secret"
SECRET_ENV = {
    "DISCORD_TOKEN": "discord-token-Very-Secret",
    "INNKEEPER_STATUS_TOKEN": "status-token-Very-Secret",
    "INNKEEPER_ENCRYPTION_KEYS": "k1=encryption-key-Very-Secret",
    "INNKEEPER_IPC_KEYS": "ipc1=" + "A" * 43 + "=",
    "INNKEEPER_PSEUDONYM_KEY": "audit1=" + "P" * 43 + "=",
    "DATABASE_URL": f"postgresql://bot:{PASSWORD}@db.internal:5432/innkeeper",
    "REDIS_URL": f"redis://default:{PASSWORD}@redis.internal:6379/0",
}


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://bot:{PASSWORD}@db:5432/x", "postgresql://bot:***@db:5432/x"),
    (f"redis://:{PASSWORD}@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://default:p%40ss@redis/0", "rediss://default:***@redis/0"),
    ("postgresql://postgres@127.0.0.1:5432/innkeeper", "postgresql://postgres@127.0.0.1:5432/innkeeper"),
    ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ("not a url at all", "not a url at all"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_finds_every_url() -> None:
    text = f"cannot reach redis://:{PASSWORD}@a:1/0 nor postgresql://u:{PASSWORD}@b/db (twice)"
    assert redact_text(text) == "cannot reach redis://:***@a:1/0 nor postgresql://u:***@b/db (twice)"


def test_settings_repr_and_str_show_no_secret() -> None:
    settings = Settings.from_env(SECRET_ENV)
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert PASSWORD not in shown
        for name in ("DISCORD_TOKEN", "INNKEEPER_STATUS_TOKEN", "INNKEEPER_ENCRYPTION_KEYS", "INNKEEPER_IPC_KEYS",
                     "INNKEEPER_PSEUDONYM_KEY"):
            assert SECRET_ENV[name].split("=", 1)[-1] not in shown, name
        assert "discord_token='***'" in shown and "database_url='postgresql://bot:***@db.internal:5432/innkeeper'" \
            in shown and "redis_prefix='innkeeper'" in shown  # the rest stays readable
    assert settings.discord_token == SECRET_ENV["DISCORD_TOKEN"]  # only the text is redacted
    assert repr(Settings()).startswith("Settings(discord_token=None,")


def test_a_malformed_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DATABASE_URL": f"mysql://bot:{PASSWORD}@db/x"})
    assert PASSWORD not in str(info.value) and "mysql://bot:***@db/x" in str(info.value)


def test_malformed_ipc_keys_are_refused_without_echoing_them() -> None:
    for value in ("k1=short", f"k1={PASSWORD}", "bad id=" + "A" * 44, "k1=" + "A" * 44 + ",k1=" + "B" * 44):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"INNKEEPER_IPC_KEYS": value})
        assert info.value.context["variable"] == "INNKEEPER_IPC_KEYS"
        assert value.split("=", 1)[1][:20] not in str(info.value)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}).require_ipc_keys()
    assert info.value.code is ErrorCode.CONFIG_MISSING and "INNKEEPER_IPC_KEYS" in info.value.message
    assert Settings.from_env({"INNKEEPER_IPC_KEYS": "dev"}).require_ipc_keys() == ("dev",)
    for bad_age in ("0.5", "3601"):
        with pytest.raises(ConfigError, match="INNKEEPER_IPC_MAX_AGE"):
            Settings.from_env({"INNKEEPER_IPC_MAX_AGE": bad_age})


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, message, args,
                               (type(exc), exc, exc.__traceback__) if exc else None)
    record.dsn = f"postgresql://bot:{PASSWORD}@db/x"  # an extra field
    return record


def test_log_lines_never_show_a_url_password() -> None:
    try:
        raise DatabaseError(f"cannot connect to postgresql://bot:{PASSWORD}@db/x")
    except DatabaseError as exc:
        caught = exc
    record = _record("connecting to %s", f"redis://:{PASSWORD}@r:6379/0", exc=caught)
    line = JSONFormatter("cli").format(record)
    assert PASSWORD not in line
    payload = json.loads(line)
    assert payload["msg"] == "connecting to redis://:***@r:6379/0" and payload["dsn"] == "postgresql://bot:***@db/x"
    assert "postgresql://bot:***@db/x" in payload["exc"]
    text = TextFormatter("%(message)s").format(_record("connecting to %s", f"redis://:{PASSWORD}@r:6379/0",
                                                       exc=caught))
    assert PASSWORD not in text and "redis://:***@r:6379/0" in text


def test_setup_logging_installs_the_redacting_formatters(capsys: pytest.CaptureFixture[str]) -> None:
    from innkeeper.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for fmt in ("json", "text"):
            setup_logging(fmt, "INFO")  # type: ignore[arg-type]
            logging.getLogger("t").warning("url %s", f"redis://:{PASSWORD}@r/0")
            err = capsys.readouterr().err
            assert "redis://:***@r/0" in err and PASSWORD not in err, fmt
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_errors_that_echo_a_url_redact_it() -> None:
    with pytest.raises(DatabaseError) as db_info:
        database_name(f"postgresql://bot:{PASSWORD}@db:5432/")
    assert PASSWORD not in str(db_info.value) and "bot:***@db" in str(db_info.value)


async def test_the_launcher_redacts_an_unreachable_redis_url() -> None:
    settings = Settings.from_env({"REDIS_URL": f"redis://default:{PASSWORD}@127.0.0.1:1/0"})
    with pytest.raises(InnkeeperError) as info:
        async with Launcher(settings, out=io.StringIO().write).redis():
            pass
    assert info.value.code is ErrorCode.REDIS_UNAVAILABLE
    assert PASSWORD not in str(info.value) and "redis://default:***@127.0.0.1:1/0" in str(info.value)
