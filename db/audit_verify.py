"""Verifying the audit log's hash chains (the scheme is described in :mod:`db.audit`).

:func:`verify` walks each chain in id order and checks, for every row:

1. ``prev_hash`` equals the previous row's ``hash`` (a deleted, inserted or reordered row breaks this);
2. ``hash`` recomputes from the row (tampering with id, guild, action, time, scheme or
   ``content_hash`` shows);
3. ``content_hash`` recomputes: for a scheme 2 row always, from ``actor_hash``, ``target_hash`` and
   ``details``, and each person still present must match their field hash (so tampering with the
   actor, the target or the details shows, also after someone in the row was erased); for a scheme
   1 row unless it was redacted;
4. every redacted row, and every scheme 2 row with an erased person, is listed by a later
   ``privacy.redact`` row of its chain, and each pseudonym in the row is the one that entry
   records (so faking an erasure, or swapping a pseudonym, shows), and
5. the chain's head points at its last row (truncating the tail shows).

A verification failure names the chain and the row. As with any hash chain kept in the same
database, someone who can rewrite every later row and the head can forge a consistent chain; keep
:attr:`VerifyResult.heads` (the chains' last hashes) somewhere else to anchor it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pypika import Table
from pypika.terms import Function

from . import validate as v
from .sql import P1, P2, P3, PgQuery, built

if TYPE_CHECKING:
    import asyncpg

    from .pool import Conn, Database

__all__ = ("Problem", "VerifyResult", "verify", "REDACT_ACTION", "GENESIS", "SIDES")

REDACT_ACTION = "privacy.redact"
GENESIS = bytes(32)
#: The people in a row: who acted, and on whom.
SIDES = ("actor", "target")


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
_CHAINS = built(
    (PgQuery.from_(_heads).select(_heads.chain_id)
     + PgQuery.from_(_audit_log).select(_audit_log.chain_id).distinct())
    .orderby(_heads.chain_id)
)
_HEAD = built(PgQuery.from_(_heads).select(_heads.last_id, _heads.last_hash).where(_heads.chain_id == P1))
_a = _audit_log
_WALK = built(
    PgQuery.from_(_a)
    .select(_a.id, _a.action, _a.details, _a.prev_hash, _a.hash, _a.content_hash, _a.redacted_at, _a.scheme,
            _a.actor_id, _a.target_id, _a.actor_salt, _a.target_salt, _a.actor_hash, _a.target_hash,
            _a.actor_pseudonym, _a.target_pseudonym,
            Function("audit_computed_content", _a.scheme, _a.actor_id, _a.target_id, _a.target, _a.details,
                     _a.actor_hash, _a.target_hash).as_("computed_content"),
            Function("audit_computed_row_hash", _a.scheme, _a.prev_hash, _a.id, _a.chain_id, _a.guild_id, _a.action,
                     _a.created_at, _a.content_hash).as_("computed_hash"),
            Function("audit_field_hash", _a.actor_salt, Function("jsonb_build_array", _a.actor_id))
            .as_("computed_actor"),
            Function("audit_field_hash", _a.target_salt, Function("jsonb_build_array", _a.target_id, _a.target))
            .as_("computed_target"))
    .where((_a.chain_id == P1) & (_a.id > P2)).orderby(_a.id).limit(P3)
)


class _Chain:
    """What the walk of one chain has seen so far."""

    __slots__ = ("chain_id", "result", "unexplained", "observed", "claims")

    def __init__(self, chain_id: int, result: VerifyResult) -> None:
        self.chain_id = chain_id
        self.result = result
        #: Rows that must be listed by a later privacy.redact entry.
        self.unexplained: set[int] = set()
        #: row → side → the pseudonym the row holds (for the sides a redaction touched).
        self.observed: dict[int, dict[str, str | None]] = {}
        #: row → side → the pseudonym the privacy.redact entries record.
        self.claims: dict[int, dict[str, str]] = {}

    def problem(self, row_id: int | None, reason: str) -> None:
        self.result.problems.append(Problem(self.chain_id, row_id, reason))

    def check(self, r: asyncpg.Record) -> None:
        rid = r["id"]
        if bytes(r["computed_hash"]) != bytes(r["hash"]):
            self.problem(rid, "hash does not match the row's contents")
        if r["scheme"] == 2:
            self._check_v2(r)
        elif r["redacted_at"] is None:
            if bytes(r["computed_content"]) != bytes(r["content_hash"]):
                self.problem(rid, "content does not match content_hash")
            elif r["actor_pseudonym"] is not None or r["target_pseudonym"] is not None:
                self.problem(rid, "a pseudonym in a row that was not redacted")
            else:
                self._marker(r)
        else:
            self.unexplained.add(rid)
            self.observed[rid] = {side: r[f"{side}_pseudonym"] for side in SIDES}

    def _check_v2(self, r: asyncpg.Record) -> None:
        rid = r["id"]
        content_ok = bytes(r["computed_content"]) == bytes(r["content_hash"])
        if not content_ok:
            self.problem(rid, "content does not match content_hash")
        erased: dict[str, str | None] = {}
        for side in SIDES:
            if r[f"{side}_salt"] is not None:
                computed, stored = r[f"computed_{side}"], r[f"{side}_hash"]
                if computed is None or stored is None or bytes(computed) != bytes(stored):
                    self.problem(rid, f"the {side} does not match {side}_hash")
                elif r[f"{side}_pseudonym"] is not None:
                    self.problem(rid, f"a pseudonym for a {side} that was not erased")
            else:
                if r[f"{side}_id"] is not None:
                    self.problem(rid, f"the {side}'s salt is gone but its id is still there")
                erased[side] = r[f"{side}_pseudonym"]
        if erased or r["redacted_at"] is not None:
            self.unexplained.add(rid)
            self.observed[rid] = erased
        elif content_ok:
            self._marker(r)

    def _marker(self, r: asyncpg.Record) -> None:
        """A verified ``privacy.redact`` row explains the rows it lists, and records their pseudonyms."""
        details: Any = r["details"]
        if r["action"] != REDACT_ACTION or not isinstance(details, dict):
            return
        self.unexplained.difference_update(details.get("redacted_ids") or ())
        pseudonyms = details.get("pseudonyms")
        if isinstance(pseudonyms, dict):
            for row, sides in pseudonyms.items():
                if isinstance(sides, dict) and str(row).isdigit():
                    self.claims.setdefault(int(row), {}).update(
                        {s: p for s, p in sides.items() if s in SIDES and isinstance(p, str)})

    def finish(self) -> None:
        for rid in sorted(self.unexplained):
            self.problem(rid, "marked redacted but no privacy.redact entry lists it")
        for rid, sides in sorted(self.observed.items()):
            claim = self.claims.get(rid, {})
            for side, pseudonym in sides.items():
                if claim.get(side) != pseudonym:
                    self.problem(rid, f"the {side}'s pseudonym is not the one the privacy.redact entry records")


async def _verify_chain(db: Database, chain_id: int, result: VerifyResult, batch: int, conn: Conn | None) -> None:
    chain = _Chain(chain_id, result)
    expected_prev = GENESIS
    last_id = 0
    while True:
        rows = await db.fetch("audit.verify_walk", _WALK, chain_id, last_id, batch, conn=conn)
        for r in rows:
            result.rows += 1
            if bytes(r["prev_hash"]) != expected_prev:
                chain.problem(r["id"], "prev_hash does not match the previous row's hash "
                                       "(a row was deleted, inserted or reordered)")
            chain.check(r)
            expected_prev = bytes(r["hash"])
            last_id = r["id"]
        if len(rows) < batch:
            break
    chain.finish()
    head = await db.fetchrow("audit.verify_head", _HEAD, chain_id, conn=conn)
    if head is None and last_id == 0:
        pass  # an empty chain
    elif head is None:
        chain.problem(None, "the chain has rows but no head")
    elif head["last_id"] != last_id or bytes(head["last_hash"]) != expected_prev:
        chain.problem(None, f"the head points at row {head['last_id']} but the chain "
                            f"ends at row {last_id} (rows were removed or added)")
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
