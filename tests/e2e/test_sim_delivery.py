"""The simulator's loss accounting with real processes: an unmodified discord.py bot (``naive_bot.py``) is
killed with SIGKILL; what the simulator buffered for its session counts as lost once the resume window
ends, and a new process that IDENTIFYs fresh never receives it (discord.py cannot resume across
processes). The case where discord.py resumes, and the buffered events count as replayed, is in
``tests/integration/test_sim_delivery_discordpy.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from innkeeper.settings import PROJECT_ROOT
from tests.procs import SIM_TOKEN, SimulatorProc, http_json, spawn, start_simulator
from tests.support import wait_for_sync

pytestmark = pytest.mark.e2e

WINDOW = 3.0
NAIVE_BOT = str(PROJECT_ROOT / "tests" / "e2e" / "naive_bot.py")


def _post(sim: SimulatorProc, guild: dict[str, Any], content: str) -> dict[str, Any]:
    status, reply = http_json("POST", sim.url + "/_sim/messages", {
        "guild_id": guild["id"], "channel_id": guild["channels"][0], "author_id": guild["members"][0],
        "content": content})
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


def _sessions(sim: SimulatorProc) -> dict[str, dict[str, Any]]:
    return {s["session_id"]: s for s in sim.stats()["sessions"]}


def test_a_killed_bots_buffered_events_are_lost_once_the_window_ends(tmp_path: Path) -> None:
    with start_simulator(tmp_path, guilds=10, shards=1, extra_args=("--resume-ttl", str(WINDOW))) as sim:
        guild = sim.world(limit=1)["guilds"][0]
        first = spawn("naive-first", [NAIVE_BOT, sim.url, SIM_TOKEN, "0", "1"], tmp_path)
        second = None
        try:
            wait_for_sync(lambda: "READY" in first.output(), timeout=60, message="the first bot READY")
            [old] = [s for s in sim.stats()["sessions"] if s["state"] == "live"]
            assert _post(sim, guild, "seen by the first")["delivered"] is True
            wait_for_sync(lambda: _sessions(sim)[old["session_id"]]["written_seq"] == old["seq"] + 1,
                          message="the live message written")
            first.stop(signal.SIGKILL)
            wait_for_sync(lambda: _sessions(sim)[old["session_id"]]["state"] == "resumable", timeout=10,
                          message="the simulator to notice the dead socket")
            for i in range(3):  # buffered for a RESUME that will never come
                assert _post(sim, guild, f"after the kill {i}")["delivered"] is True
            stats = sim.stats()
            assert stats["pending"] == 3 and stats["lost"] == 0  # not lost yet: the window is still open

            second = spawn("naive-second", [NAIVE_BOT, sim.url, SIM_TOKEN, "0", "1"], tmp_path)
            wait_for_sync(lambda: "READY" in second.output(), timeout=60, message="the second bot READY")
            [new] = [s for s in sim.stats()["sessions"] if s["state"] == "live"]
            assert new["session_id"] != old["session_id"]
            assert _post(sim, guild, "seen by the second")["delivered"] is True
            wait_for_sync(lambda: sim.stats()["sessions_expired"] == 1, timeout=WINDOW + 10,
                          message="the dead session's window to end")
            stats = sim.stats()
            books = {s["session_id"]: s for s in stats["sessions"]}
            dead, alive = books[old["session_id"]], books[new["session_id"]]
            assert dead["state"] == "ended" and dead["end_reason"] == "resume window ended"
            assert (dead["buffered"], dead["replayed"], dead["lost"]) == (3, 0, 3)
            assert alive["state"] == "live" and alive["lost"] == 0 and alive["buffered"] == 0
            assert stats["lost"] == stats["lost_buffered"] == 3 and stats["lost_unrouted"] == 0
            assert stats["identifies"] == 2 and stats["resumes"] == 0 and stats["replayed"] == 0
            assert stats["shards"]["0"]["closes"] == {"1006": 1}  # the kill: no close frame
        finally:
            first.stop(signal.SIGKILL)
            if second is not None:
                second.stop()
