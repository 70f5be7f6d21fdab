"""The public development key (``INNKEEPER_ENCRYPTION_KEYS=dev``) never reaches a bot that talks to Discord."""

from __future__ import annotations

import pytest

from cluster.demo import DemoOptions, demo_database_url, demo_settings
from db.crypto import KeyRing, generate_key
from innkeeper.errors import ConfigError
from innkeeper.settings import Settings
from shard.__main__ import EXIT_FATAL, main


@pytest.mark.parametrize("api_url", [None, "https://discord.com", "https://discord.com.evil.test",
                                     "http://10.0.0.5:8765", "http://192.168.1.2:8765", "http://sim.internal:8765"])
def test_dev_is_refused_unless_discord_is_a_local_simulator(api_url: str | None) -> None:
    settings = Settings(api_url=api_url, encryption_keys=("dev",))
    assert not settings.uses_local_simulator
    with pytest.raises(ConfigError) as info:
        KeyRing.from_settings(settings)
    assert info.value.context["variable"] == "INNKEEPER_ENCRYPTION_KEYS"
    assert "local simulator" in info.value.message and "innkeeper keygen" in info.value.message
    with pytest.raises(ConfigError):
        KeyRing.parse(["dev"])  # nobody gets it by default


@pytest.mark.parametrize("api_url", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765",
                                     "http://127.0.0.2:1"])
def test_dev_is_accepted_with_a_local_simulator(api_url: str) -> None:
    settings = Settings(api_url=api_url, encryption_keys=("dev",))
    assert settings.uses_local_simulator
    assert KeyRing.from_settings(settings).key_ids == ("dev",)


def test_a_cluster_pointed_at_discord_with_the_dev_key_stops_and_is_not_restarted(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "a-real-looking-token")
    monkeypatch.setenv("INNKEEPER_ENCRYPTION_KEYS", "dev")
    monkeypatch.setenv("INNKEEPER_IPC_KEYS", generate_key("ipc1"))  # a real bus key: only the dev key is wrong
    monkeypatch.delenv("DISCORD_API_URL", raising=False)
    assert main(["--shard-ids", "0", "--shard-count", "1"]) == EXIT_FATAL
    assert "INNKEEPER_ENCRYPTION_KEYS=dev is the public development key" in capsys.readouterr().err


def test_the_demo_uses_the_dev_key_only_on_its_simulator_and_its_own_database() -> None:
    configured = Settings(database_url="postgresql://postgres@127.0.0.1:5432/innkeeper")
    demo = demo_settings(configured, DemoOptions(), 8765)
    assert demo.encryption_keys == ("dev",) and demo.api_url == "http://127.0.0.1:8765"
    assert KeyRing.from_settings(demo).key_ids == ("dev",)  # out of the box
    assert demo.database_url == "postgresql://postgres@127.0.0.1:5432/innkeeper_demo"  # never the configured one
    assert demo_database_url(demo.database_url) == demo.database_url
    real = Settings(encryption_keys=("k1=" + "A" * 43 + "=",))
    assert demo_settings(real, DemoOptions(), 8765).encryption_keys == real.encryption_keys
