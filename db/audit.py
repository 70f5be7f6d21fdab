"""The audit log: append-only, hash-chained per guild, verifiable after users are erased.

The scheme
----------
Each guild has its own chain (``chain_id`` = the guild id, 0 for events outside a guild);
``audit_heads`` holds each chain's last id and hash and is locked while a row is appended, so a
chain's rows are strictly ordered by ``id``. Appending is one call to the SQL function
``audit_append`` (``sql/V2__feedback_audit.sql``), which computes, for a new row:

* ``content_hash = sha256(jsonb_build_array(actor_id, target_id, target, details)::text)``: a hash
  of the **personal** fields only;
* ``hash = sha256(prev_hash || jsonb_build_array(id, chain_id, guild_id, action,
  created_at in µs, hex(content_hash))::text)``, with ``prev_hash`` the previous row's ``hash``
  (32 zero bytes for the first row of a chain).

Erasing a user (:func:`redact_user`) sets the personal fields of every row about them to NULL and
stamps ``redacted_at`` (the redaction marker); ``content_hash``, ``prev_hash`` and ``hash`` stay.
It then appends one ``privacy.redact`` row per affected chain whose details list the redacted ids.

:func:`verify` walks each chain in id order and checks, for every row:

1. ``prev_hash`` equals the previous row's ``hash`` (a deleted, inserted or reordered row breaks this);
2. ``hash`` recomputes from the row (tampering with id, guild, action, time or ``content_hash`` shows);
3. for a row that is not redacted, ``content_hash`` recomputes from the personal fields
   (tampering with actor, target or details shows);
4. every redacted row is listed by a later ``privacy.redact`` row of its chain (so marking a row
   redacted to hide an edit shows too), and
5. the chain's head points at its last row (truncating the tail shows).

A verification failure names the chain and the row. As with any hash chain kept in the same
database, someone who can rewrite every later row and the head can forge a consistent chain; keep
:attr:`VerifyResult.heads` (the chains' last hashes) somewhere else to anchor it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pypika import Criterion, Order, Table
from pypika.terms import Function, Term

from . import validate as v
from .sql import P1, P2, P3, P4, P5, P6, Cast, Now, PgQuery, TableFunction, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = ("AuditEntry", "Problem", "VerifyResult", "append", "recent", "for_user", "verify", "redact_user",
           "REDACT_ACTION", "GENESIS")

REDACT_ACTION = "privacy.redact"
GENESIS = bytes(32)


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

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> AuditEntry:
        return cls(r["id"], r["guild_id"], r["actor_id"], r["action"], r["target_id"], r["target"], r["details"],
                   r["created_at"], bytes(r["hash"]), r["redacted_at"] is not None)


@dataclass(frozen=True, slots=True)
class Problem:
    chain_id: int
    row_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row_id}" if self.row_id is not None else "head"
        return f"audit chain {self.chain_id}, {where}: {self.reason}"


@dataclass(slots=True)
class VerifyResult:
    rows: int = 0
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)
    heads: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


_audit_log = Table("audit_log")
_heads = Table("audit_heads")
_ENTRY = ("id", "guild_id", "actor_id", "action", "target_id", "target", "details", "created_at", "hash",
          "redacted_at")
_COLUMNS = tuple(_audit_log.field(c) for c in _ENTRY)

# audit_append (sql/V2__feedback_audit.sql) locks the chain's head, hashes and inserts the row.
_APPEND = built(PgQuery.from_(TableFunction(Function("audit_append", P1, P2, P3, P4, P5, P6))).select(*_ENTRY))
_RECENT = built(
    PgQuery.from_(_audit_log).select(*_COLUMNS).where((_audit_log.chain_id == P1) & (_audit_log.id < P2))
    .orderby(_audit_log.id, order=Order.desc).limit(P3)
)
_FOR_USER = built(
    (PgQuery.from_(_audit_log).select(*_COLUMNS).where(_audit_log.actor_id == P1)
     + PgQuery.from_(_audit_log).select(*_COLUMNS).where(_audit_log.target_id == P1))
    .orderby(_audit_log.id)
)
_CHAINS = built(
    (PgQuery.from_(_heads).select(_heads.chain_id)
     + PgQuery.from_(_audit_log).select(_audit_log.chain_id).distinct())
    .orderby(_heads.chain_id)
)
_HEAD = built(PgQuery.from_(_heads).select(_heads.last_id, _heads.last_hash).where(_heads.chain_id == P1))
_WALK = built(
    PgQuery.from_(_audit_log)
    .select(_audit_log.id, _audit_log.action, _audit_log.details, _audit_log.prev_hash, _audit_log.hash,
            _audit_log.content_hash, _audit_log.redacted_at,
            Function("audit_content_hash", _audit_log.actor_id, _audit_log.target_id, _audit_log.target,
                        _audit_log.details).as_("computed_content"),
            Function("audit_row_hash", _audit_log.prev_hash, _audit_log.id, _audit_log.chain_id,
                        _audit_log.guild_id, _audit_log.action, _audit_log.created_at,
                        _audit_log.content_hash).as_("computed_hash"))
    .where((_audit_log.chain_id == P1) & (_audit_log.id > P2)).orderby(_audit_log.id).limit(P3)
)


def _mentions(text: Term) -> Criterion:
    """``text`` contains the user id ($1) written out."""
    return Function("strpos", text, Cast(P1, "text")) > 0


# Rows that mention the user anywhere: as actor, as target, or anywhere in the target text or details
# (as a number, a string, or inside text such as a <@id> mention).
_REDACT = built(
    PgQuery.update(_audit_log)
    .set(_audit_log.actor_id, None).set(_audit_log.target_id, None).set(_audit_log.target, None)
    .set(_audit_log.details, None).set(_audit_log.redacted_at, Now())
    .where(_audit_log.redacted_at.isnull()
           & ((_audit_log.actor_id == P1) | (_audit_log.target_id == P1) | _mentions(_audit_log.target)
              | _mentions(Cast(_audit_log.details, "text"))))
    .returning(_audit_log.id, _audit_log.chain_id)
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
        None if details is None else v.json_value("audit details", details), conn=conn, idempotent=False,
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
    """Every entry where ``user_id`` is the actor or the target (for data exports)."""
    rows = await db.fetch("audit.for_user", _FOR_USER, v.snowflake("user id", user_id), conn=conn)
    return [AuditEntry.from_record(r) for r in rows]


async def redact_user(db: Database, user_id: int, *, conn: Conn) -> int:
    """Redact every row about ``user_id`` and record the redaction in each chain; returns the row count.

    Must run inside the caller's transaction (``conn``), so erasure is all-or-nothing.
    """
    rows = await db.fetch("audit.redact", _REDACT, v.snowflake("user id", user_id), conn=conn)
    by_chain: dict[int, list[int]] = {}
    for r in rows:
        by_chain.setdefault(r["chain_id"], []).append(r["id"])
    for chain_id, ids in sorted(by_chain.items()):
        await append(db, REDACT_ACTION, guild_id=chain_id or None, details={"redacted_ids": sorted(ids)}, conn=conn)
    return len(rows)


async def _verify_chain(db: Database, chain_id: int, result: VerifyResult, batch: int, conn: Conn | None) -> None:
    expected_prev = GENESIS
    last_id = 0
    unexplained: set[int] = set()
    while True:
        rows = await db.fetch("audit.verify_walk", _WALK, chain_id, last_id, batch, conn=conn)
        for r in rows:
            rid = r["id"]
            result.rows += 1
            if bytes(r["prev_hash"]) != expected_prev:
                result.problems.append(Problem(chain_id, rid, "prev_hash does not match the previous row's hash "
                                                              "(a row was deleted, inserted or reordered)"))
            if bytes(r["computed_hash"]) != bytes(r["hash"]):
                result.problems.append(Problem(chain_id, rid, "hash does not match the row's contents"))
            if r["redacted_at"] is None:
                if bytes(r["computed_content"]) != bytes(r["content_hash"]):
                    result.problems.append(Problem(chain_id, rid, "content does not match content_hash"))
                elif r["action"] == REDACT_ACTION and isinstance(r["details"], dict):
                    unexplained.difference_update(r["details"].get("redacted_ids") or ())
            else:
                unexplained.add(rid)
            expected_prev = bytes(r["hash"])
            last_id = rid
        if len(rows) < batch:
            break
    for rid in sorted(unexplained):
        result.problems.append(Problem(chain_id, rid, "marked redacted but no privacy.redact entry lists it"))
    head = await db.fetchrow("audit.verify_head", _HEAD, chain_id, conn=conn)
    if head is None and last_id == 0:
        pass  # an empty chain
    elif head is None:
        result.problems.append(Problem(chain_id, None, "the chain has rows but no head"))
    elif head["last_id"] != last_id or bytes(head["last_hash"]) != expected_prev:
        result.problems.append(Problem(chain_id, None, f"the head points at row {head['last_id']} but the chain "
                                                       f"ends at row {last_id} (rows were removed or added)"))
    result.heads[chain_id] = expected_prev.hex()


async def verify(db: Database, *, guild_id: int | None = None, all_chains: bool = True, batch: int = 5000,
                 conn: Conn | None = None) -> VerifyResult:
    """Verify one guild's chain (``guild_id``, with ``all_chains=False``) or every chain.

    Returns
    -------
    VerifyResult
        ``ok`` when nothing is wrong; otherwise ``problems`` name each bad row.
    """
    result = VerifyResult()
    if all_chains and guild_id is None:
        chains = [r["chain_id"] for r in await db.fetch("audit.chains", _CHAINS, conn=conn)]
    else:
        chains = [0 if guild_id is None else v.snowflake("guild id", guild_id)]
    for chain_id in chains:
        result.chains += 1
        await _verify_chain(db, chain_id, result, batch, conn)
    return result
