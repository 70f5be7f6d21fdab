"""Permission levels per role, and per-command overrides, for each guild.

Levels: ``EVERYONE=0``, ``MOD=1``, ``ADMIN=2``, ``OWNER=3``. A member's level is the highest level
of their roles (:func:`level_for_roles`); bot owners and the guild owner are handled by the
command pipeline. A command override sets the level a command needs in one guild, or disables it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pypika import Table
from pypika.functions import Max
from pypika.terms import Function

from . import validate as v
from .guilds import ensure_guild
from .sql import P1, P2, P3, P4, Cast, Coalesce, PgQuery, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = (
    "PermissionLevel", "CommandOverride", "set_role_level", "remove_role_level", "get_role_levels",
    "level_for_roles", "set_command_override", "get_command_override", "list_command_overrides",
    "clear_command_override", "get_role_levels_many", "list_command_overrides_many",
)


class PermissionLevel(enum.IntEnum):
    EVERYONE = 0
    MOD = 1
    ADMIN = 2
    OWNER = 3


@dataclass(frozen=True, slots=True)
class CommandOverride:
    """``min_level=None`` keeps the command's own default level."""

    guild_id: int
    command: str
    min_level: int | None
    enabled: bool

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> CommandOverride:
        return cls(r["guild_id"], r["command"], r["min_level"], r["enabled"])


_roles = Table("role_permissions")
_overrides = Table("command_overrides")
_OVERRIDE_COLUMNS = (_overrides.guild_id, _overrides.command, _overrides.min_level, _overrides.enabled)

_SET_ROLE = built(
    PgQuery.into(_roles).columns(_roles.guild_id, _roles.role_id, _roles.level).insert(P1, P2, P3)
    .on_conflict(_roles.guild_id, _roles.role_id).do_update(_roles.level)
)
_REMOVE_ROLE = built(PgQuery.from_(_roles).delete().where((_roles.guild_id == P1) & (_roles.role_id == P2)))
_GET_ROLES = built(PgQuery.from_(_roles).select(_roles.role_id, _roles.level).where(_roles.guild_id == P1))
_ANY_GUILD_ROLE = _roles.guild_id == Function("ANY", Cast(P1, "bigint[]"))
_GET_ROLES_MANY = built(PgQuery.from_(_roles).select(_roles.guild_id, _roles.role_id, _roles.level)
                        .where(_ANY_GUILD_ROLE))
_LEVEL_FOR_ROLES = built(
    PgQuery.from_(_roles).select(Coalesce(Max(_roles.level), 0))
    .where((_roles.guild_id == P1) & (_roles.role_id == Function("ANY", Cast(P2, "bigint[]"))))
)
_SET_OVERRIDE = built(
    PgQuery.into(_overrides).columns(*_OVERRIDE_COLUMNS).insert(P1, P2, P3, P4)
    .on_conflict(_overrides.guild_id, _overrides.command)
    .do_update(_overrides.min_level).do_update(_overrides.enabled)
    .returning(*_OVERRIDE_COLUMNS)
)
_OVERRIDE_OF = (_overrides.guild_id == P1) & (_overrides.command == P2)
_GET_OVERRIDE = built(PgQuery.from_(_overrides).select(*_OVERRIDE_COLUMNS).where(_OVERRIDE_OF))
_LIST_OVERRIDES = built(
    PgQuery.from_(_overrides).select(*_OVERRIDE_COLUMNS).where(_overrides.guild_id == P1).orderby(_overrides.command)
)
_LIST_OVERRIDES_MANY = built(
    PgQuery.from_(_overrides).select(*_OVERRIDE_COLUMNS)
    .where(_overrides.guild_id == Function("ANY", Cast(P1, "bigint[]")))
    .orderby(_overrides.guild_id, _overrides.command)
)
_CLEAR_OVERRIDE = built(PgQuery.from_(_overrides).delete().where(_OVERRIDE_OF))


async def set_role_level(db: Database, guild_id: int, role_id: int, level: int, *, conn: Conn | None = None) -> None:
    """Give members with ``role_id`` the permission ``level`` in the guild (0 removes the grant)."""
    guild_id = v.snowflake("guild id", guild_id)
    role_id = v.snowflake("role id", role_id)
    level = v.level("level", level)
    if level == PermissionLevel.EVERYONE:
        await remove_role_level(db, guild_id, role_id, conn=conn)
        return
    if conn is None:
        async with db.transaction() as tx:
            await ensure_guild(db, guild_id, conn=tx)
            await db.execute("role_permissions.set", _SET_ROLE, guild_id, role_id, level, conn=tx)
    else:
        await ensure_guild(db, guild_id, conn=conn)
        await db.execute("role_permissions.set", _SET_ROLE, guild_id, role_id, level, conn=conn)


async def remove_role_level(db: Database, guild_id: int, role_id: int, *, conn: Conn | None = None) -> bool:
    """Remove the role's grant; True when there was one."""
    status = await db.execute("role_permissions.remove", _REMOVE_ROLE, v.snowflake("guild id", guild_id),
                              v.snowflake("role id", role_id), conn=conn, idempotent=True)
    return status.endswith(" 1")


async def get_role_levels(db: Database, guild_id: int, *, conn: Conn | None = None) -> dict[int, int]:
    """``{role_id: level}`` for every role with a grant in the guild."""
    rows = await db.fetch("role_permissions.list", _GET_ROLES, v.snowflake("guild id", guild_id), conn=conn)
    return {r["role_id"]: r["level"] for r in rows}


async def get_role_levels_many(db: Database, guild_ids: list[int], *,
                               conn: Conn | None = None) -> dict[int, dict[int, int]]:
    """:func:`get_role_levels` for many guilds in one query: ``{guild_id: {role_id: level}}`` (every guild present)."""
    ids = [v.snowflake("guild id", g) for g in guild_ids]
    out: dict[int, dict[int, int]] = {g: {} for g in ids}
    for r in await db.fetch("role_permissions.list_many", _GET_ROLES_MANY, ids, conn=conn):
        out[r["guild_id"]][r["role_id"]] = r["level"]
    return out


async def level_for_roles(db: Database, guild_id: int, role_ids: list[int], *, conn: Conn | None = None) -> int:
    """The highest level any of ``role_ids`` grants in the guild (0 when none does)."""
    ids = [v.snowflake("role id", r) for r in role_ids]
    if not ids:
        return 0
    return int(await db.fetchval("role_permissions.level_for_roles", _LEVEL_FOR_ROLES,
                                 v.snowflake("guild id", guild_id), ids, conn=conn))


def _command(command: str) -> str:
    return v.text("command name", command, v.MAX_COMMAND_NAME)


async def set_command_override(db: Database, guild_id: int, command: str, *, min_level: int | None = None,
                               enabled: bool = True, conn: Conn | None = None) -> CommandOverride:
    """Set the level ``command`` needs in the guild, and/or enable or disable it there."""
    guild_id = v.snowflake("guild id", guild_id)
    args = (guild_id, _command(command), None if min_level is None else v.level("level", min_level), bool(enabled))
    if conn is None:
        async with db.transaction() as tx:
            await ensure_guild(db, guild_id, conn=tx)
            row = await db.fetchrow("command_overrides.set", _SET_OVERRIDE, *args, conn=tx)
    else:
        await ensure_guild(db, guild_id, conn=conn)
        row = await db.fetchrow("command_overrides.set", _SET_OVERRIDE, *args, conn=conn)
    assert row is not None
    return CommandOverride.from_record(row)


async def get_command_override(db: Database, guild_id: int, command: str, *,
                               conn: Conn | None = None) -> CommandOverride | None:
    """The guild's override for ``command``, if any."""
    row = await db.fetchrow("command_overrides.get", _GET_OVERRIDE, v.snowflake("guild id", guild_id),
                            _command(command), conn=conn)
    return CommandOverride.from_record(row) if row else None


async def list_command_overrides(db: Database, guild_id: int, *, conn: Conn | None = None) -> list[CommandOverride]:
    """Every override in the guild, by command name."""
    rows = await db.fetch("command_overrides.list", _LIST_OVERRIDES, v.snowflake("guild id", guild_id), conn=conn)
    return [CommandOverride.from_record(r) for r in rows]


async def list_command_overrides_many(db: Database, guild_ids: list[int], *,
                                      conn: Conn | None = None) -> dict[int, list[CommandOverride]]:
    """:func:`list_command_overrides` for many guilds in one query (every guild present)."""
    ids = [v.snowflake("guild id", g) for g in guild_ids]
    out: dict[int, list[CommandOverride]] = {g: [] for g in ids}
    for r in await db.fetch("command_overrides.list_many", _LIST_OVERRIDES_MANY, ids, conn=conn):
        out[r["guild_id"]].append(CommandOverride.from_record(r))
    return out


async def clear_command_override(db: Database, guild_id: int, command: str, *, conn: Conn | None = None) -> bool:
    """Remove the guild's override for ``command``; True when there was one."""
    status = await db.execute("command_overrides.clear", _CLEAR_OVERRIDE, v.snowflake("guild id", guild_id),
                              _command(command), conn=conn, idempotent=True)
    return status.endswith(" 1")
