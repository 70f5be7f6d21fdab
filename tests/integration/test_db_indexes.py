"""EXPLAIN shows every hot lookup using its index on 100k rows per table.

Rows are generated server-side with generate_series, then ANALYZEd; each lookup is the query
module's own SQL with realistic parameters, and the plan must contain an index scan on the
expected index.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from db import aliases, audit, error_events, feedback, guilds, permissions, reminders, usage
from db.pool import Database
from db.testing import migrated

pytestmark = pytest.mark.integration

N = 100_000
_FILL = [
    "INSERT INTO guilds (id) SELECT g FROM generate_series(1, 100000) g",
    "INSERT INTO guild_settings (guild_id, prefix) SELECT g, '!' FROM generate_series(1, 100000) g",
    "INSERT INTO role_permissions (guild_id, role_id, level) SELECT (g % 20000) + 1, g, 1 + g % 3"
    " FROM generate_series(1, 100000) g",
    "INSERT INTO command_overrides (guild_id, command, min_level) SELECT (g % 20000) + 1, 'cmd' || g, 1"
    " FROM generate_series(1, 100000) g",
    "INSERT INTO aliases (scope, scope_id, name, command, created_by)"
    " SELECT CASE WHEN g % 2 = 0 THEN 'guild' ELSE 'user' END, g % 10000, 'a' || g, 'cmd', g % 50000"
    " FROM generate_series(1, 100000) g",
    "INSERT INTO feedback (guild_id, author_id, body, status, closed_at)"
    " SELECT g % 5000, g % 20000, 'v1:x:y:z', CASE WHEN g % 10 = 0 THEN 'open' ELSE 'resolved' END,"
    " CASE WHEN g % 10 = 0 THEN NULL ELSE now() END FROM generate_series(1, 100000) g",
    "INSERT INTO audit_heads (chain_id, last_id, last_hash) SELECT g, 0, '\\x00' FROM generate_series(0, 999) g",
    "INSERT INTO audit_log (chain_id, guild_id, actor_id, action, target_id, content_hash, prev_hash, hash)"
    " SELECT g % 1000, g % 1000, g % 30000, 'member.ban', (g * 7) % 30000, '\\x00', '\\x00', '\\x00'"
    " FROM generate_series(1, 100000) g",
    "INSERT INTO command_usage (used_at, guild_id, user_id, command, success)"
    " SELECT now() - (g || ' seconds')::interval, g % 2000, g % 30000, 'cmd' || (g % 40), true"
    " FROM generate_series(1, 100000) g",
    "INSERT INTO reminders (user_id, body, due_at, delivered_at)"
    " SELECT g % 30000, 'v1:x:y:z', now() - (g || ' seconds')::interval,"
    " CASE WHEN g % 100 = 0 THEN NULL ELSE now() END FROM generate_series(1, 100000) g",
    "UPDATE reminders SET delivered_at = NULL, failed_at = now(), failure = 'forbidden',"
    " failure_notified_at = CASE WHEN id % 2 = 0 THEN now() END WHERE id % 100 = 1",
    "INSERT INTO error_events (code, message, user_id, occurred_at)"
    " SELECT 'E' || (1000 + g % 200), 'boom', g % 30000, now() - (g || ' seconds')::interval"
    " FROM generate_series(1, 100000) g",
]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with migrated(database_url) as database:
        for sql in _FILL:
            await database.execute("fill", sql)
        await database.execute("analyze", "ANALYZE")
        yield database


def _index_scans(plan: dict[str, Any]) -> set[str]:
    found = set()
    if plan.get("Node Type") in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") and "Index Name" in plan:
        found.add(plan["Index Name"])
    for child in plan.get("Plans", []):
        found |= _index_scans(child)
    return found


async def _explain(db: Database, sql: str, *args: Any) -> tuple[set[str], str]:
    raw = await db.fetchval("explain", "EXPLAIN (FORMAT JSON) " + sql, *args)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return _index_scans(plan), json.dumps(plan)[:2000]


HOUR_AGO = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
LOOKUPS: list[tuple[str, str, tuple[Any, ...], set[str]]] = [
    ("guild settings", guilds._GET, (4242,), {"guild_settings_pkey"}),
    ("role levels of a member", permissions._LEVEL_FOR_ROLES, (4242, [1, 2, 3]), {"role_permissions_pkey"}),
    ("command override", permissions._GET_OVERRIDE, (4242, "cmd77"), {"command_overrides_pkey"}),
    ("alias by name", aliases._GET, ("guild", 42, "a42"), {"aliases_scope_name_key"}),
    ("alias resolution", aliases._RESOLVE, (42, 43, "a42"), {"aliases_scope_name_key"}),
    ("aliases of a scope", aliases._LIST, ("user", 43), {"aliases_scope_name_key"}),
    ("open feedback of a guild", *feedback.build_list_query(guild_id=42, statuses=("open",)),
     {"feedback_guild_status_idx"}),
    ("feedback of an author", *feedback.build_list_query(author_id=4242), {"feedback_author_idx"}),
    ("open feedback triage", *feedback.build_list_query(statuses=("open", "acknowledged")), {"feedback_open_idx"}),
    ("recent audit of a guild", audit._RECENT, (42, 2**63 - 1, 50), {"audit_log_chain_idx"}),
    # erasure locks the rows a user acted in or was acted on (the export also scans details for mentions:
    # a rare, throttled request, not a hot lookup)
    ("audit rows about a user", audit._ABOUT, (4242,), {"audit_log_actor_idx", "audit_log_target_idx"}),
    ("top commands of a guild", usage._TOP, (42, HOUR_AGO, 10), {"command_usage_guild_idx"}),
    ("usage per day (/stats)", usage._BY_DAY, (42, HOUR_AGO, None, 5000), {"command_usage_guild_idx"}),
    ("due reminders", reminders._CLAIM, ("c", 60.0, 50), {"reminders_due_idx"}),
    ("reminders of a user", reminders._LIST_PENDING, (4242, 25), {"reminders_user_idx"}),
    ("undelivered reminders to tell a user of", reminders._TAKE_FAILURES, (4242, 100),
     {"reminders_failed_unseen_idx"}),
    ("errors by code", *error_events.build_list_query(code="E1042"), {"error_events_code_id_idx"}),
]


async def test_hot_lookups_use_their_indexes(db: Database) -> None:
    assert await db.fetchval("count", "SELECT count(*) FROM command_usage") == N
    failures = []
    for label, sql, args, expected in LOOKUPS:
        used, plan = await _explain(db, sql, *args)
        if not expected <= used:
            failures.append(f"{label}: expected {sorted(expected)}, plan used {sorted(used)}: {plan}")
    assert not failures, "\n".join(failures)
