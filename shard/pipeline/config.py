"""What the pipeline needs to know about a guild, in one object: :class:`GuildConfig`.

It combines the guild's settings row (prefix, feature toggles, log channel, automod level), its role
levels and its per-command overrides, so one cache lookup answers every stage for a command and the
prefix resolver for a message. :meth:`GuildConfig.to_wire` / :meth:`from_wire` turn it into plain
msgpack-able data for the shared cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .levels import Level

__all__ = ("GuildConfig", "Override", "GuildConfigSource", "AUTOMOD_NAMES")

AUTOMOD_NAMES = ("off", "low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Override:
    """A guild's change to one command: a required level (``None`` keeps the default) and an on/off switch."""

    level: Level | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class GuildConfig:
    """One guild's configuration as the pipeline sees it."""

    guild_id: int
    prefix: str | None = None
    features: Mapping[str, bool] = field(default_factory=dict)
    log_channel_id: int | None = None
    automod_level: int = 0
    role_levels: Mapping[int, Level] = field(default_factory=dict)
    overrides: Mapping[str, Override] = field(default_factory=dict)

    def feature_enabled(self, name: str) -> bool:
        return bool(self.features.get(name, True))

    def override(self, command: str) -> Override | None:
        return self.overrides.get(command)

    def to_wire(self) -> dict[str, Any]:
        return {
            "g": self.guild_id, "p": self.prefix, "f": dict(self.features), "l": self.log_channel_id,
            "a": self.automod_level, "r": [[rid, int(lv)] for rid, lv in self.role_levels.items()],
            "o": [[name, None if o.level is None else int(o.level), o.enabled] for name, o in self.overrides.items()],
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> GuildConfig:
        """Rebuild from :meth:`to_wire` output.

        Raises
        ------
        ValueError, KeyError, TypeError
            When ``data`` is not what :meth:`to_wire` produced.
        """
        return cls(
            guild_id=int(data["g"]),
            prefix=None if data["p"] is None else str(data["p"]),
            features={str(k): bool(v) for k, v in dict(data["f"]).items()},
            log_channel_id=None if data["l"] is None else int(data["l"]),
            automod_level=int(data["a"]),
            role_levels={int(rid): Level(int(lv)) for rid, lv in data["r"]},
            overrides={str(n): Override(None if lv is None else Level(int(lv)), bool(en)) for n, lv, en in data["o"]},
        )


class GuildConfigSource(Protocol):
    """Where the pipeline gets a guild's configuration (a cache in front of the database)."""

    async def get(self, guild_id: int) -> GuildConfig: ...

    async def invalidate(self, guild_id: int) -> None: ...
