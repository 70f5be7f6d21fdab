"""The audit log: append-only, hash-chained per guild, verifiable after users are erased.

The scheme
----------
Each guild has its own chain (``chain_id`` = the guild id, 0 for events outside a guild);
``audit_heads`` holds each chain's last id and hash and is locked while a row is appended, so a
chain's rows are strictly ordered by ``id``. Appending is one call to the SQL function
``audit_append_v2`` (``sql/V6__audit_pseudonyms_erasures.sql``), which computes, for a new row
(scheme 2), with two fresh 16-byte random salts:

* ``actor_hash = sha256(actor_salt || [actor_id])`` and
  ``target_hash = sha256(target_salt || [target_id, target])``: each person hashed on their own;
* ``content_hash = sha256([2, hex(actor_hash), hex(target_hash), details])``;
* ``hash = sha256(prev_hash || [id, chain_id, guild_id, action, created_at in µs, hex(content_hash), 2])``,
  with ``prev_hash`` the previous row's ``hash`` (32 zero bytes for the first row of a chain).

Rows written before V6 (scheme 1) have one ``content_hash`` over all the personal fields,
``sha256([actor_id, target_id, target, details])``, and the row hash without the trailing 2.

Erasure keeps accountability
----------------------------
The audit log records admin actions; erasing a user must not erase who did them, nor let a
sanctioned user erase the moderator who acted on them. :func:`redact_user` therefore replaces the
erased user, wherever they are the actor or the target of a row, by a keyed pseudonym
(:mod:`db.pseudonyms`): the same user gets the same pseudonym in every row, so the log still says
the same person did A and B. In a scheme 2 row only their id (and for a target, the target
description) and their salt are deleted; their field hash stays, so the action, the other person
and the details stay verifiable, and with the salt gone nobody can test a guessed id against the
hash. A scheme 1 row cannot be split that way (its one content hash would let anyone test guesses
of the erased id against the fields left), so all its personal fields are cleared and *both*
people in it are replaced by their pseudonyms. Rows whose details merely mention the user are left
alone (they are someone else's record of what they did). Each affected chain gets one
``privacy.redact`` row that lists the rows and records the pseudonyms it wrote; that row is hashed
like any other, so a pseudonym cannot be changed afterwards unnoticed. Verification:
:mod:`db.audit_verify`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pypika import Criterion, Order, Table
from pypika.terms import Function, Term

from . import validate as v
from .audit_verify import GENESIS, REDACT_ACTION, Problem, VerifyResult, verify
from .sql import P1, P2, P3, P4, P5, P6, P7, P8, Cast, Coalesce, Now, PgQuery, TableFunction, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database
    from .pseudonyms import Pseudonyms

__all__ = ("AuditEntry", "Problem", "VerifyResult", "append", "recent", "for_user", "verify", "redact_user",
           "REDACT_ACTION", "GENESIS")

_SALT_BYTES = 16


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    guild_id: int | None
    actor_id: int | None
    action: str
    target_id: int | None
    target: str | None
    details: Any
    created_at: dt.datetime
    hash: bytes
    redacted: bool
    #: Who acted, when they were erased (``psn:<key id>:<hex>``; :mod:`db.pseudonyms`).
    actor_pseudonym: str | None = None
    #: On whom, when they were erased.
    target_pseudonym: str | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> AuditEntry:
        return cls(r["id"], r["guild_id"], r["actor_id"], r["action"], r["target_id"], r["target"], r["details"],
                   r["created_at"], bytes(r["hash"]), r["redacted_at"] is not None, r["actor_pseudonym"],
                   r["target_pseudonym"])


_audit_log = Table("audit_log")
_ENTRY = ("id", "guild_id", "actor_id", "action", "target_id", "target", "details", "created_at", "hash",
          "redacted_at", "actor_pseudonym", "target_pseudonym")
_COLUMNS = tuple(_audit_log.field(c) for c in _ENTRY)

# audit_append_v2 (sql/V6__audit_pseudonyms_erasures.sql) locks the chain's head, hashes and inserts the row.
_APPEND = built(PgQuery.from_(TableFunction(Function("audit_append_v2", P1, P2, P3, P4, P5, P6, P7, P8)))
                .select(*_ENTRY))
_RECENT = built(
    PgQuery.from_(_audit_log).select(*_COLUMNS).where((_audit_log.chain_id == P1) & (_audit_log.id < P2))
    .orderby(_audit_log.id, order=Order.desc).limit(P3)
)


def _mentions(text: Term) -> Criterion:
    """``text`` contains the user id ($1) written out (as a number, a string, or in a ``<@id>`` mention)."""
    return Function("strpos", text, Cast(P1, "text")) > 0


#: For exports: rows where the user acted or was acted on, and rows whose target or details mention them.
_FOR_USER = built(
    PgQuery.from_(_audit_log).select(*_COLUMNS)
    .where((_audit_log.actor_id == P1) | (_audit_log.target_id == P1) | _mentions(_audit_log.target)
           | _mentions(Cast(_audit_log.details, "text")))
    .orderby(_audit_log.id)
)
#: The rows erasing user $1 changes, locked.
_ABOUT = built(
    PgQuery.from_(_audit_log)
    .select(_audit_log.id, _audit_log.chain_id, _audit_log.scheme, _audit_log.actor_id, _audit_log.target_id)
    .where((_audit_log.actor_id == P1) | (_audit_log.target_id == P1)).orderby(_audit_log.id).for_update()
)
_REDACTED = Coalesce(_audit_log.redacted_at, Now())
# Scheme 2: one person goes (their id, their salt, for a target the description); their field hash stays.
_ERASE_ACTOR = built(
    PgQuery.update(_audit_log).set(_audit_log.actor_id, None).set(_audit_log.actor_salt, None)
    .set(_audit_log.actor_pseudonym, P2).set(_audit_log.redacted_at, _REDACTED)
    .where((_audit_log.scheme == 2) & (_audit_log.actor_id == P1))
)
_ERASE_TARGET = built(
    PgQuery.update(_audit_log).set(_audit_log.target_id, None).set(_audit_log.target, None)
    .set(_audit_log.target_salt, None).set(_audit_log.target_pseudonym, P2).set(_audit_log.redacted_at, _REDACTED)
    .where((_audit_log.scheme == 2) & (_audit_log.target_id == P1))
)
# Scheme 1 (rows from before V6): every personal field goes; both people become pseudonyms ($2, $3).
_ERASE_V1 = built(
    PgQuery.update(_audit_log)
    .set(_audit_log.actor_id, None).set(_audit_log.target_id, None).set(_audit_log.target, None)
    .set(_audit_log.details, None).set(_audit_log.actor_pseudonym, P2).set(_audit_log.target_pseudonym, P3)
    .set(_audit_log.redacted_at, Now())
    .where((_audit_log.id == P1) & (_audit_log.scheme == 1))
)


async def append(db: Database, action: str, *, guild_id: int | None = None, actor_id: int | None = None,
                 target_id: int | None = None, target: str | None = None, details: Any = None,
                 conn: Conn | None = None) -> AuditEntry:
    """Append an event to the guild's chain.

    Parameters
    ----------
    action:
        What happened, e.g. ``"member.ban"`` (1-64 characters).
    actor_id, target_id:
        Who did it and to whom (Discord ids).
    target:
        A short description of the target (≤ 200 characters).
    details:
        Any JSON value (see :func:`db.validate.json_value`).
    """
    row = await db.fetchrow(
        "audit.append", _APPEND, v.opt_snowflake("guild id", guild_id), v.opt_snowflake("actor id", actor_id),
        v.text("audit action", action, v.MAX_ACTION), v.opt_snowflake("target id", target_id),
        None if target is None else v.text("audit target", target, v.MAX_TARGET, min_len=0),
        None if details is None else v.json_value("audit details", details),
        os.urandom(_SALT_BYTES), os.urandom(_SALT_BYTES), conn=conn, idempotent=False,
    )
    assert row is not None
    return AuditEntry.from_record(row)


async def recent(db: Database, guild_id: int | None, *, limit: int = 50, before_id: int | None = None,
                 conn: Conn | None = None) -> list[AuditEntry]:
    """The guild's latest entries, newest first (``guild_id=None``: events outside guilds)."""
    chain = 0 if guild_id is None else v.snowflake("guild id", guild_id)
    rows = await db.fetch("audit.recent", _RECENT, chain, v.INT64_MAX if before_id is None else before_id,
                          min(max(limit, 1), 500), conn=conn)
    return [AuditEntry.from_record(r) for r in rows]


async def for_user(db: Database, user_id: int, *, conn: Conn | None = None) -> list[AuditEntry]:
    """Every entry about ``user_id`` (for data exports): as actor or target, or named in the target or details."""
    rows = await db.fetch("audit.for_user", _FOR_USER, v.snowflake("user id", user_id), conn=conn)
    return [AuditEntry.from_record(r) for r in rows]


async def redact_user(db: Database, user_id: int, pseudonyms: Pseudonyms, *, conn: Conn) -> int:
    """Replace ``user_id`` by its pseudonym in every row they acted in or were acted on; returns the row count.

    See the module docstring for what is kept and why. Each affected chain gets one ``privacy.redact``
    row listing the rows and the pseudonyms written. Must run inside the caller's transaction
    (``conn``), so erasure is all-or-nothing.
    """
    uid = v.snowflake("user id", user_id)
    mine = pseudonyms.of(uid)
    rows = await db.fetch("audit.about_user", _ABOUT, uid, conn=conn)
    written: dict[int, dict[str, dict[str, str]]] = {}  # chain → row → side → pseudonym
    for r in rows:
        sides = written.setdefault(r["chain_id"], {}).setdefault(str(r["id"]), {})
        if r["scheme"] == 2:
            sides.update({side: mine for side in ("actor", "target") if r[f"{side}_id"] == uid})
            continue
        actor, target = (None if r[k] is None else pseudonyms.of(r[k]) for k in ("actor_id", "target_id"))
        await db.execute("audit.erase_v1", _ERASE_V1, r["id"], actor, target, conn=conn)
        sides.update({side: p for side, p in (("actor", actor), ("target", target)) if p is not None})
    await db.execute("audit.erase_actor", _ERASE_ACTOR, uid, mine, conn=conn)
    await db.execute("audit.erase_target", _ERASE_TARGET, uid, mine, conn=conn)
    for chain_id, by_row in sorted(written.items()):
        await append(db, REDACT_ACTION, guild_id=chain_id or None,
                     details={"redacted_ids": sorted(int(i) for i in by_row), "pseudonyms": by_row}, conn=conn)
    return len(rows)
