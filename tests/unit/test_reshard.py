"""Zero-downtime reshard, the pure parts: generations in the plan, the identify budget check, what each
generation handles, and the parser filters that carry it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cluster.plan import Plan, group_name, is_clusters_group, next_first_id, plan
from cluster.render import clusters_conf_name
from cluster.reshard import check_budget
from innkeeper.errors import ErrorCode, InnkeeperError
from ipc.generations import GenerationState, ack_value
from shard.handover import Handles, Handover, WhileActive, event_ms, handles
from shard.parser_filters import ParserFilters
from tests.support import wait_for

EPOCH = 1_420_070_400_000


def snowflake(unix_ms: int) -> str:
    return str((unix_ms - EPOCH) << 22 | 7)


# --- the plan ----------------------------------------------------------------------------------------
def test_a_new_generation_is_numbered_apart_and_round_trips() -> None:
    old = plan(8, 4, clusters=2)
    assert old.generation == 0 and old.group == "clusters" and [c.id for c in old.clusters] == [0, 1]
    new = plan(16, 4, clusters=4, generation=1, first_id=next_first_id(old, 4))
    assert [c.id for c in new.clusters] == [2, 3, 4, 5] and new.group == "clusters-g1"
    assert [c.shard_ids for c in new.clusters] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)]
    assert Plan.from_dict(new.as_dict()) == new
    # back below the free ids: numbering starts at 0 again
    assert next_first_id(new, 2) == 0 and next_first_id(new, 3) == 6
    # plans stored before generations existed read as generation 0
    legacy = old.as_dict()
    del legacy["generation"]
    assert Plan.from_dict(legacy) == old
    with pytest.raises(ValueError, match="repeat"):
        Plan.from_dict({**new.as_dict(), "clusters": [{**c.as_dict(), "id": 2} for c in new.clusters]})


def test_group_and_file_names_per_generation() -> None:
    assert [group_name(g) for g in (0, 1, 12)] == ["clusters", "clusters-g1", "clusters-g12"]
    assert [clusters_conf_name(g) for g in (0, 3)] == ["clusters.conf", "clusters-g3.conf"]
    assert all(is_clusters_group(g) for g in ("clusters", "clusters-g1", "clusters-g40"))
    assert not any(is_clusters_group(g) for g in ("status", "crashguard", "clusters-gx", "clusters-", "simulator"))


# --- the identify budget -----------------------------------------------------------------------------
def test_the_budget_must_cover_every_new_shard_above_the_reserve() -> None:
    limit = {"total": 1000, "remaining": 26, "reset_after": 7_200_000, "max_concurrency": 4}
    assert check_budget(limit, 16, 10) == 10
    with pytest.raises(InnkeeperError) as info:
        check_budget(limit, 17, 10)
    assert info.value.code is ErrorCode.IDENTIFY_BUDGET
    assert "26 of 1000" in info.value.message and "17 shards needs 17" in info.value.message
    assert "10 in reserve" in info.value.message and "2.0 h" in info.value.message
    with pytest.raises(InnkeeperError, match="no usable session_start_limit"):
        check_budget({"total": 1000}, 1, 0)


# --- what each generation handles --------------------------------------------------------------------
@pytest.mark.parametrize(("state", "generation", "expected"), [
    (None, 0, Handles.ALL),
    (GenerationState(0), 0, Handles.ALL),
    (GenerationState(0, 1), 0, Handles.ALL),
    (GenerationState(0, 1), 1, Handles.NONE),
    (GenerationState(0, 1, 5_000), 0, Handles.BEFORE),
    (GenerationState(0, 1, 5_000), 1, Handles.FROM),
    (GenerationState(1), 0, Handles.NONE),  # a generation a reshard replaced, still stopping
    (GenerationState(0, 1, 5_000), 7, Handles.NONE),
])
def test_handles(state: GenerationState | None, generation: int, expected: Handles) -> None:
    assert handles(state, generation) is expected


def test_event_time_comes_from_the_snowflake() -> None:
    assert event_ms({"id": snowflake(1_700_000_000_123)}) == 1_700_000_000_123
    assert event_ms({"id": "nope"}) == 0 and event_ms({}) == 0


class _Bot:
    def __init__(self, seen: list[str]) -> None:
        self._connection = SimpleNamespace(parsers={
            "MESSAGE_CREATE": lambda d: seen.append(f"m{d['id']}"),
            "INTERACTION_CREATE": lambda d: seen.append(f"i{d['id']}"),
            "GUILD_CREATE": lambda d: seen.append("g"),
        })


def test_parser_filters_stack_and_restore_the_originals() -> None:
    seen: list[str] = []
    bot = _Bot(seen)
    original = bot._connection.parsers["MESSAGE_CREATE"]
    filters = ParserFilters()
    filters.install(bot)  # type: ignore[arg-type]
    filters.set("a", ["MESSAGE_CREATE"], lambda e, d: d["id"] == 1)
    filters.set("b", ["MESSAGE_CREATE"], lambda e, d: d["id"] == 2)
    for i in (1, 2, 3):
        bot._connection.parsers["MESSAGE_CREATE"]({"id": i})
    assert seen == ["m3"]
    filters.set("a", ["MESSAGE_CREATE"], None)  # b stays on
    bot._connection.parsers["MESSAGE_CREATE"]({"id": 1})
    bot._connection.parsers["MESSAGE_CREATE"]({"id": 2})
    assert seen == ["m3", "m1"] and filters.active("b") and not filters.active("a")

    def boom(event: str, data: Any) -> bool:
        raise RuntimeError("a broken filter keeps the event")
    filters.set("b", ["MESSAGE_CREATE"], boom)
    bot._connection.parsers["MESSAGE_CREATE"]({"id": 4})
    assert seen[-1] == "m4"
    filters.set("b", ["MESSAGE_CREATE"], None)
    assert bot._connection.parsers["MESSAGE_CREATE"] is original  # nothing left in front: nothing paid


class _Redis:
    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, Any]] = {}

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {k.encode(): str(v).encode() for k, v in self.hashes.get(key, {}).items()}

    async def hset(self, key: str, field: str, value: Any) -> None:
        self.hashes.setdefault(key, {})[field] = value


async def test_the_switch_splits_commands_by_their_snowflake_time() -> None:
    from ipc.keys import Keys

    now = [1_700_000_000.0]
    t_ms = 1_700_000_001_000
    seen_old: list[str] = []
    seen_new: list[str] = []
    redis, keys = _Redis(), Keys("t")
    procs = []
    for gen, seen in ((0, seen_old), (1, seen_new)):
        bot = _Bot(seen)
        filters = ParserFilters()
        filters.install(bot)  # type: ignore[arg-type]
        procs.append((Handover(redis, keys, generation=gen, cluster_id=gen, filters=filters,  # type: ignore[arg-type]
                               clock=lambda: now[0]), bot))
    (old, old_bot), (new, new_bot) = procs
    service_runs: list[str] = []

    class Work:
        def __init__(self, name: str) -> None:
            self.name = name

        async def start(self) -> None:
            service_runs.append(f"{self.name} start")

        async def stop(self) -> None:
            service_runs.append(f"{self.name} stop")

    def both(event: str, data: dict[str, Any]) -> None:
        old_bot._connection.parsers[event](data)
        new_bot._connection.parsers[event](data)

    redis.hashes[keys.generations()] = {"active": 0, "next": 1, "phase": "starting"}
    for h in (old, new):
        await h.start()  # reads the record at once, then follows it
    old_work, new_work = WhileActive(Work("old"), old), WhileActive(Work("new"), new)
    await old_work.start()
    await new_work.start()
    assert old.is_active() and not new.is_active() and service_runs == ["old start"]
    both("MESSAGE_CREATE", {"id": snowflake(t_ms - 5)})
    both("GUILD_CREATE", {"id": "1"})
    assert seen_old == [f"m{snowflake(t_ms - 5)}", "g"] and seen_new == ["g"]  # held: caches only
    assert redis.hashes[keys.generation_acks()] == {"0:0": "1:0", "1:1": "1:0"}

    redis.hashes[keys.generations()] = {"active": 0, "next": 1, "switch_at_ms": t_ms, "phase": "switching"}
    await old.refresh()
    seen_old.clear()
    seen_new.clear()
    # the new generation stalls and learns T only after T: what it dropped meanwhile from T on is still its own
    both("INTERACTION_CREATE", {"id": snowflake(t_ms + 2)})
    both("INTERACTION_CREATE", {"id": snowflake(t_ms - 2)})
    assert seen_old == [f"i{snowflake(t_ms - 2)}"] and seen_new == []
    await new.refresh()
    assert seen_new == [f"i{snowflake(t_ms + 2)}"] and new.replayed == 1
    assert redis.hashes[keys.generation_acks()]["1:1"] == ack_value(GenerationState(0, 1, t_ms))
    seen_old.clear()
    seen_new.clear()
    for ms in (t_ms - 1, t_ms, t_ms + 1):
        both("MESSAGE_CREATE", {"id": snowflake(ms)})
        both("INTERACTION_CREATE", {"id": snowflake(ms)})
    assert seen_old == [f"m{snowflake(t_ms - 1)}", f"i{snowflake(t_ms - 1)}"]
    assert seen_new == [f"{k}{snowflake(ms)}" for ms in (t_ms, t_ms + 1) for k in "mi"]
    assert old.describe() == f"before {t_ms}" and new.describe() == f"from {t_ms}"

    now[0] = t_ms / 1000  # T: background work moves over (the timer set for T does this in a real loop)
    old._flip()
    new._flip()
    await wait_for(lambda: len(service_runs) == 3, timeout=5, message="the services to follow the switch")
    assert not old.is_active() and new.is_active()
    assert service_runs == ["old start", "old stop", "new start"]
    await old.stop()
    await new.stop()
    await new_work.stop()
    assert service_runs[-1] == "new stop"


# --- status ------------------------------------------------------------------------------------------
def test_status_shows_both_generations_during_the_overlap() -> None:
    import msgpack

    from cluster.ops import format_status
    from cluster.state import build_status, health, reshard_status

    old = plan(8, 4, clusters=2)
    new = plan(16, 4, clusters=4, generation=1, first_id=2)
    state = GenerationState(0, 1, None, "starting", msgpack.packb(new.as_dict(), use_bin_type=True))
    reshard, other = reshard_status(state, old)
    assert other == new and reshard is not None
    assert (reshard["from_shards"], reshard["to_shards"], reshard["from_generation"], reshard["to_generation"]) == \
        (8, 16, 0, 1)
    beat = {"v": 1, "cluster_id": 0, "host": "h", "pid": 10, "started_at": 0.0, "written_at": 100.0,
            "state": "READY", "rss_bytes": 1, "events_per_s": 0.0, "metrics_port": None,
            "identify_blocked_reason": None, "generation": 0, "handles": "all",
            "shards": [{"id": s, "state": "READY", "latency_ms": 1.0, "guilds": 1, "last_event_age_s": 0.1,
                        "identified_at": None, "ready_at": None, "identifies": 1, "resumes": 0, "reconnects": 0}
                       for s in range(4)]}
    doc = build_status(old, {0: beat}, now=100.0, other=other, reshard=reshard)  # type: ignore[dict-item]
    assert [(c["id"], c["generation"]) for c in doc["clusters"]] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1), (5, 1)]
    assert health(doc, old).expected == 8  # /healthz follows the plan in Redis, not the one coming up
    text = format_status(doc, None)
    assert text.splitlines()[0] == "resharding 8 → 16 shards (generation 0 → 1): starting"
    assert "generation 1" in text
    # after the switch the plan in Redis is the new one, and the record carries the old one
    switched = GenerationState(0, 1, 5_000, "draining", msgpack.packb(old.as_dict(), use_bin_type=True))
    reshard, other = reshard_status(switched, new)
    assert other == old and reshard is not None and reshard["from_shards"] == 8 and reshard["switch_at"] == 5.0
    assert reshard_status(GenerationState(1), new) == (None, None)


# --- auto-reshard ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("recommended", "running", "required", "expected"), [
    (16, 8, False, 16),  # Discord recommends more: go there
    (8, 8, False, None),
    (4, 8, False, None),  # never fewer by itself
    (8, 8, True, 16),  # a 4011 with no higher recommendation: twice as many
    (24, 8, True, 24),
    (16, None, False, None),  # no plan: nothing to compare
])
def test_the_auto_reshard_decision(recommended: int, running: int | None, required: bool,
                                   expected: int | None) -> None:
    from cluster.auto_reshard import decide

    assert decide(recommended, running, sharding_required=required) == expected


async def test_advice_round_trips_and_a_missing_record_reads_as_none() -> None:
    from ipc.gateway_advice import GatewayAdvice, read_advice, read_sharding_required, write_advice
    from ipc.keys import Keys

    class Hashes:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        async def hget(self, key: str, field: str) -> bytes | None:
            return self.data.get(field)

        async def hset(self, key: str, field: str, value: str) -> None:
            self.data[field] = value.encode()

    redis, keys = Hashes(), Keys("t")
    assert await read_advice(redis, keys) is None  # type: ignore[arg-type]
    assert await read_sharding_required(redis, keys) is None  # type: ignore[arg-type]
    advice = GatewayAdvice(16, 8, 16, "advised", False, 1.5, "Discord recommends 16 shards, 8 run")
    await write_advice(redis, keys, advice)  # type: ignore[arg-type]
    assert await read_advice(redis, keys) == advice  # type: ignore[arg-type]
    redis.data["advice"] = b"{not json"
    assert await read_advice(redis, keys) is None  # type: ignore[arg-type]
