"""EarlyShed: slash commands shed unparsed while admission is saturated, expired ones dropped."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from shard.early_shed import EXPIRED, EarlyShed
from shard.pipeline.admission import Admission

EPOCH_MS = 1_420_070_400_000


def _interaction(created_s: float, kind: int = 2, name: str = "ping") -> dict[str, Any]:
    snowflake = (int(created_s * 1000) - EPOCH_MS) << 22
    return {"type": kind, "id": str(snowflake), "token": "tok", "data": {"name": name}}


class Recording(EarlyShed):
    """Records the answers instead of sending them."""

    __slots__ = ("answered",)

    async def _answer(self, interaction_id: int, token: str) -> None:
        self.answered.append((interaction_id, token))


def _installed(admission: Admission, now: float) -> tuple[EarlyShed, list[Any], list[tuple[int, str]]]:
    parsed: list[Any] = []
    tree = SimpleNamespace(get_command=lambda name: object() if name == "ping" else None)
    bot = SimpleNamespace(_connection=SimpleNamespace(parsers={"INTERACTION_CREATE": parsed.append}), tree=tree)
    shed = Recording(lambda: admission, clock=lambda: now)
    shed.answered = []
    shed.install(bot)  # type: ignore[arg-type]
    return shed, parsed, shed.answered


async def test_below_capacity_every_interaction_is_parsed() -> None:
    admission = Admission(max_running=2, max_queued=0)
    shed, parsed, answered = _installed(admission, now=1_800_000_000.0)
    fresh = _interaction(1_800_000_000.0 - 0.5)
    button = _interaction(1_800_000_000.0 - 0.5, kind=3)
    for data in (fresh, button, "not a map"):
        shed.on_interaction(data)
    assert parsed == [fresh, button, "not a map"] and answered == []


async def test_saturated_slash_commands_are_answered_unparsed() -> None:
    admission = Admission(max_running=1, max_queued=0)
    await admission.enter()
    assert admission.saturated
    shed, parsed, answered = _installed(admission, now=1_800_000_000.0)
    command = _interaction(1_800_000_000.0 - 0.2)
    button = _interaction(1_800_000_000.0 - 0.2, kind=3)
    shed.on_interaction(command)
    shed.on_interaction(button)  # a component of an admitted conversation goes on
    await asyncio.sleep(0)
    assert parsed == [button]
    assert answered == [(int(command["id"]), "tok")]
    assert shed.shed == 1 and admission.snapshot()["shed"] == 1


async def test_an_interaction_too_old_to_answer_is_dropped() -> None:
    admission = Admission(max_running=1, max_queued=0)
    shed, parsed, answered = _installed(admission, now=1_800_000_000.0)
    before = EXPIRED._value.get()
    shed.on_interaction(_interaction(1_800_000_000.0 - 3.5))
    await asyncio.sleep(0)
    assert parsed == [] and answered == []
    assert shed.expired == 1 and EXPIRED._value.get() == before + 1
    just_in_time = _interaction(1_800_000_000.0 - 2.9)
    shed.on_interaction(just_in_time)
    assert parsed == [just_in_time]


async def test_a_malformed_payload_goes_to_discord_py() -> None:
    admission = Admission(max_running=1, max_queued=0)
    await admission.enter()
    shed, parsed, _ = _installed(admission, now=1_800_000_000.0)
    odd = {"type": 2, "id": "not a number", "token": "t"}
    shed.on_interaction(odd)
    assert parsed == [odd]
