from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from innkeeper.errors import ConfigError, ErrorCode
from innkeeper.settings import Settings


def test_defaults_need_nothing() -> None:
    s = Settings.from_env({})
    assert s.redis_prefix == "innkeeper"
    assert s.database_url.startswith("postgresql://")
    assert s.api_url is None
    assert s.identify_window_s == 5.0


def test_reads_standard_and_innkeeper_variables() -> None:
    s = Settings.from_env({
        "DISCORD_TOKEN": "abc", "DISCORD_API_URL": "http://127.0.0.1:8765/", "REDIS_URL": "redis://h:1/2",
        "INNKEEPER_IDENTIFY_WINDOW": "0.25", "INNKEEPER_OWNER_IDS": "1, 22,333", "INNKEEPER_SYNC_COMMANDS": "no",
    })
    assert s.require_token() == "abc"
    assert s.api_url == "http://127.0.0.1:8765"
    assert s.redis_url == "redis://h:1/2"
    assert s.identify_window_s == 0.25
    assert s.owner_ids == frozenset({1, 22, 333})
    assert s.sync_commands is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INNKEEPER_IDENTIFY_WINDOW", "soon"),
        ("INNKEEPER_IDENTIFY_WINDOW", "-1"),
        ("INNKEEPER_IDENTIFY_WINDOW", "nan"),
        ("INNKEEPER_STATUS_PORT", "70000"),
        ("INNKEEPER_OWNER_IDS", "12,abc"),
        ("DATABASE_URL", "mysql://x/y"),
        ("REDIS_URL", "localhost:6379"),
        ("DISCORD_API_URL", "ftp://x"),
        ("INNKEEPER_REDIS_PREFIX", "has space"),
        ("INNKEEPER_LOG_FORMAT", "xml"),
        ("INNKEEPER_SYNC_COMMANDS", "maybe"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert name in info.value.message
    assert info.value.context["variable"] == name


def test_host_index_must_be_below_hosts() -> None:
    with pytest.raises(ConfigError, match="INNKEEPER_HOST_INDEX"):
        Settings.from_env({"INNKEEPER_HOSTS": "2", "INNKEEPER_HOST_INDEX": "2"})


def test_missing_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}).require_token()
    assert info.value.code is ErrorCode.CONFIG_MISSING
    assert "DISCORD_TOKEN" in str(info.value)


def test_as_env_round_trips() -> None:
    original = Settings.from_env({
        "DISCORD_TOKEN": "t", "DISCORD_API_URL": "http://127.0.0.1:1", "INNKEEPER_OWNER_IDS": "5,6",
        "INNKEEPER_IDENTIFY_WINDOW": "0.5", "INNKEEPER_ENCRYPTION_KEYS": "a=b,c=d",
    })
    assert Settings.from_env(original.as_env()) == original


@given(st.text(max_size=30))
def test_integer_variables_never_crash_on_garbage(value: str) -> None:
    try:
        s = Settings.from_env({"INNKEEPER_GLOBAL_RATE": value})
    except ConfigError as exc:
        assert "INNKEEPER_GLOBAL_RATE" in exc.message
    else:
        assert s.global_rate >= 1
