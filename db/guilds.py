"""Guilds and their settings: prefix, feature toggles, log channel, automod level, locale.

A guild's settings row is created on the first write (an upsert that also records the guild), so
readers get :meth:`GuildSettings.default` for a guild that never changed anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pypika import Field, Table
from pypika.terms import Function, NullValue, Term

from . import validate as v
from .sql import EXCLUDED, P1, P2, P3, Cast, Infix, Now, PgQuery, Sql, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = (
    "GuildSettings", "get_settings", "set_prefix", "set_feature", "clear_feature", "set_log_channel",
    "set_automod_level", "set_locale", "ensure_guild", "mark_left", "delete_guild", "AUTOMOD_LEVELS",
    "get_settings_many",
)

#: off, low, medium, high
AUTOMOD_LEVELS = range(4)
_LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,2}")
_FEATURE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """One guild's settings. ``prefix=None`` means the bot's default prefix."""

    guild_id: int
    prefix: str | None = None
    features: dict[str, bool] = field(default_factory=dict)
    log_channel_id: int | None = None
    automod_level: int = 0
    locale: str = "en-US"

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> GuildSettings:
        return cls(r["guild_id"], r["prefix"], dict(r["features"]), r["log_channel_id"], r["automod_level"],
                   r["locale"])

    def feature(self, name: str, default: bool = True) -> bool:
        """Whether ``name`` is enabled; ``default`` when the guild never toggled it."""
        return self.features.get(name, default)


_guilds = Table("guilds")
_settings = Table("guild_settings")
_COLUMNS = (_settings.guild_id, _settings.prefix, _settings.features, _settings.log_channel_id,
            _settings.automod_level, _settings.locale)

_ENSURE_GUILD = built(PgQuery.into(_guilds).columns(_guilds.id).insert(P1)
                      .on_conflict(_guilds.id).do_update(_guilds.left_at, NullValue()))
_GET = built(PgQuery.from_(_settings).select(*_COLUMNS).where(_settings.guild_id == P1))
_GET_MANY = built(PgQuery.from_(_settings).select(*_COLUMNS)
                  .where(_settings.guild_id == Function("ANY", Cast(P1, "bigint[]"))))


def _upsert_setting(column: Field, value: Term = P2, merged: Term | None = None) -> Sql:
    """Record the guild ($1) if new, then set one column of its settings row, created on the first write.

    The first write stores ``value``; a later one stores ``merged``, by default the proposed value.
    """
    record_guild = PgQuery.into(_guilds).columns(_guilds.id).insert(P1).on_conflict(_guilds.id).do_nothing()
    return built(
        PgQuery.with_(record_guild, "g").into(_settings).columns(_settings.guild_id, column).insert(P1, value)
        .on_conflict(_settings.guild_id).do_update(column, merged).do_update(_settings.updated_at, Now())
        .returning(*_COLUMNS)
    )


_SET_PREFIX = _upsert_setting(_settings.prefix)
# A toggle merges into the stored object; jsonb || lets the new {"feature": enabled} win.
_SET_FEATURE = _upsert_setting(
    _settings.features, Function("jsonb_build_object", Cast(P2, "text"), Cast(P3, "boolean")),
    merged=Infix(_settings.features, "||", EXCLUDED.features),
)
_CLEAR_FEATURE = built(
    PgQuery.update(_settings).set(_settings.features, _settings.features - Cast(P2, "text"))
    .set(_settings.updated_at, Now()).where(_settings.guild_id == P1).returning(*_COLUMNS)
)
_SET_LOG_CHANNEL = _upsert_setting(_settings.log_channel_id)
_SET_AUTOMOD = _upsert_setting(_settings.automod_level)
_SET_LOCALE = _upsert_setting(_settings.locale)
_MARK_LEFT = built(PgQuery.update(_guilds).set(_guilds.left_at, Now()).where(_guilds.id == P1))
_DELETE_GUILD = built(PgQuery.from_(_guilds).delete().where(_guilds.id == P1))


async def ensure_guild(db: Database, guild_id: int, *, conn: Conn | None = None) -> None:
    """Record that the bot is in ``guild_id`` (clearing ``left_at`` when it rejoined)."""
    await db.execute("guilds.ensure", _ENSURE_GUILD, v.snowflake("guild id", guild_id), conn=conn,
                     idempotent=True)


async def get_settings(db: Database, guild_id: int, *, conn: Conn | None = None) -> GuildSettings:
    """The guild's settings, or the defaults when it never changed any."""
    row = await db.fetchrow("guild_settings.get", _GET, v.snowflake("guild id", guild_id), conn=conn)
    return GuildSettings.from_record(row) if row else GuildSettings(guild_id)


async def get_settings_many(db: Database, guild_ids: list[int], *,
                            conn: Conn | None = None) -> dict[int, GuildSettings]:
    """:func:`get_settings` for many guilds in one query: ``{guild_id: settings}`` (defaults where none)."""
    ids = [v.snowflake("guild id", g) for g in guild_ids]
    rows = await db.fetch("guild_settings.get_many", _GET_MANY, ids, conn=conn)
    found = {r["guild_id"]: GuildSettings.from_record(r) for r in rows}
    return {g: found.get(g) or GuildSettings(g) for g in ids}


async def _upsert(db: Database, name: str, sql: Sql, *args: Any, conn: Conn | None) -> GuildSettings:
    row = await db.fetchrow(name, sql, *args, conn=conn, idempotent=True)
    assert row is not None
    return GuildSettings.from_record(row)


async def set_prefix(db: Database, guild_id: int, prefix: str | None, *, conn: Conn | None = None) -> GuildSettings:
    """Set the command prefix (1-16 characters, no whitespace); ``None`` restores the default."""
    if prefix is not None:
        v.text("prefix", prefix, v.MAX_PREFIX)
        if any(ch.isspace() for ch in prefix):
            raise v.bad("prefix", "cannot contain spaces")
    return await _upsert(db, "guild_settings.set_prefix", _SET_PREFIX, v.snowflake("guild id", guild_id), prefix,
                         conn=conn)


async def set_feature(db: Database, guild_id: int, feature: str, enabled: bool, *,
                      conn: Conn | None = None) -> GuildSettings:
    """Turn a feature on or off for the guild (feature names: lowercase letters, digits, ``_.-``)."""
    v.text("feature name", feature, v.MAX_FEATURE_NAME, pattern=_FEATURE_RE,
           pattern_help="lowercase letters, digits, '_', '.' or '-'")
    return await _upsert(db, "guild_settings.set_feature", _SET_FEATURE, v.snowflake("guild id", guild_id), feature,
                         bool(enabled), conn=conn)


async def clear_feature(db: Database, guild_id: int, feature: str, *, conn: Conn | None = None) -> GuildSettings:
    """Forget the guild's toggle for ``feature`` so the feature's default applies again."""
    v.text("feature name", feature, v.MAX_FEATURE_NAME)
    row = await db.fetchrow("guild_settings.clear_feature", _CLEAR_FEATURE, v.snowflake("guild id", guild_id),
                            feature, conn=conn, idempotent=True)
    return GuildSettings.from_record(row) if row else GuildSettings(guild_id)


async def set_log_channel(db: Database, guild_id: int, channel_id: int | None, *,
                          conn: Conn | None = None) -> GuildSettings:
    """Set (or with ``None`` clear) the channel where moderation events are logged."""
    return await _upsert(db, "guild_settings.set_log_channel", _SET_LOG_CHANNEL, v.snowflake("guild id", guild_id),
                         v.opt_snowflake("log channel id", channel_id), conn=conn)


async def set_automod_level(db: Database, guild_id: int, level: int, *, conn: Conn | None = None) -> GuildSettings:
    """Set the automod level: 0 off, 1 low, 2 medium, 3 high."""
    if isinstance(level, bool) or not isinstance(level, int) or level not in AUTOMOD_LEVELS:
        raise v.bad("automod level", "must be 0 (off) to 3 (high)")
    return await _upsert(db, "guild_settings.set_automod", _SET_AUTOMOD, v.snowflake("guild id", guild_id), level,
                         conn=conn)


async def set_locale(db: Database, guild_id: int, locale: str, *, conn: Conn | None = None) -> GuildSettings:
    """Set the guild's locale, e.g. ``en-US`` or ``pt-BR``."""
    v.text("locale", locale, v.MAX_LOCALE, min_len=2, pattern=_LOCALE_RE, pattern_help="a locale such as en-US")
    return await _upsert(db, "guild_settings.set_locale", _SET_LOCALE, v.snowflake("guild id", guild_id), locale,
                         conn=conn)


async def mark_left(db: Database, guild_id: int, *, conn: Conn | None = None) -> None:
    """Record that the bot left the guild (its settings are kept in case it comes back)."""
    await db.execute("guilds.mark_left", _MARK_LEFT, v.snowflake("guild id", guild_id), conn=conn, idempotent=True)


async def delete_guild(db: Database, guild_id: int, *, conn: Conn | None = None) -> bool:
    """Delete the guild with its settings, permission levels and overrides; True when it existed."""
    status = await db.execute("guilds.delete", _DELETE_GUILD, v.snowflake("guild id", guild_id), conn=conn,
                              idempotent=True)
    return status.endswith(" 1")
