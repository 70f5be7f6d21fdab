"""The short chaos suite (``python -m bench chaos --short`` minus the slowest cases), run by make test.

Real supervisord, simulator, private Redis and a PostgreSQL proxy, under a steady load of messages and
slash commands. Goals of issue 14 checked on every case: 0 events lost, 0 commands answered twice;
restarts spend 0 identifies (only a fault that ends a session on purpose needs one, and a reshard one per
new shard); a reshard leaves no command unanswered.
"""

from __future__ import annotations

import pytest

from bench.chaos import Options, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


async def test_chaos_short(tmp_path: pytest.TempPathFactory) -> None:
    opts = Options.short()
    opts.kills, opts.down_s = 1, 2.0
    opts.cases = ("kill", "rolling", "restart", "redis", "postgres", "faults", "reshard")
    opts.logs = tmp_path / "chaos"  # type: ignore[operator]
    out = await run(opts)
    rows = {r["case"]: r for r in out["rows"]}
    assert set(rows) >= {"kill -9", "rolling restart", "restart, all at once", "Redis down 2 s",
                         "PostgreSQL down 2 s", "reconnect", "invalid_session resumable", "invalid_session new",
                         "silent", "REST 5xx burst", "reshard 4 → 8 shards"}, rows
    for name, row in rows.items():
        assert row["events_lost"] == 0, row
        assert row["answered_twice"] == 0, row
        assert row["commands"] > 0, row  # the load ran through every case
        spent = {"invalid_session new": 1, "reshard 4 → 8 shards": 8}.get(name, 0)  # new sessions, on purpose
        assert row["identifies"] == spent, row
    assert rows["reshard 4 → 8 shards"]["unanswered"] == 0, rows["reshard 4 → 8 shards"]
    for name in ("kill -9", "rolling restart", "restart, all at once"):
        assert rows[name]["ready_s_max"] is not None and rows[name]["ready_s_max"] > 0, rows[name]  # it went down
