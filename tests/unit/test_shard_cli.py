from __future__ import annotations

import pytest
import yarl

from shard.__main__ import EXIT_FATAL, main, parse_shard_ids
from shard.urls import gateway_url_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", [0]), ("0,1", [0, 1]), ("8-11", [8, 9, 10, 11]), ("3,0-1", [0, 1, 3]), (" 2 , 4 ", [2, 4])],
)
def test_parse_shard_ids(text: str, expected: list[int]) -> None:
    assert parse_shard_ids(text) == expected


@pytest.mark.parametrize("text", ["", "a", "-1", "5-3", "1,1", "1-2,2"])
def test_parse_shard_ids_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard_ids(text)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--shard-ids", "0,1"])  # no --shard-count
    assert info.value.code == 2
    assert "--shard-count" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--shard-ids", "4", "--shard-count", "4"])
    assert info.value.code == 2


def test_missing_token_is_fatal_not_retried(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main(["--shard-ids", "0", "--shard-count", "1"]) == EXIT_FATAL
    assert "DISCORD_TOKEN" in capsys.readouterr().err


def test_gateway_url_follows_api_url() -> None:
    assert gateway_url_for("http://127.0.0.1:8765") == yarl.URL("ws://127.0.0.1:8765/gateway")
    assert gateway_url_for("https://example.test") == yarl.URL("wss://example.test/gateway")
