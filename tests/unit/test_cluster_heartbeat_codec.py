"""The heartbeat record codec rejects anything that is not a heartbeat."""

from __future__ import annotations

import msgpack
import pytest

from innkeeper.errors import IPCError
from ipc.heartbeat import decode_heartbeat, encode_heartbeat
from tests.integration.test_heartbeat import beat

LOAD = {"running": 3, "queued": 1, "max_running": 64, "max_queued": 512, "deferred": 2, "shed": 0}


def test_round_trip() -> None:
    b = beat(3)
    assert decode_heartbeat(encode_heartbeat(b)) == b
    b["commands"] = LOAD  # type: ignore[typeddict-item]
    assert decode_heartbeat(encode_heartbeat(b))["commands"] == LOAD


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("shards"),
        lambda b: b.update(v=99),
        lambda b: b.update(pid="12"),
        lambda b: b.update(rss_bytes=True),
        lambda b: b["shards"][0].pop("state"),
        lambda b: b["shards"].append("x"),
        lambda b: b.update(commands="busy"),
        lambda b: b.update(commands={**LOAD, "shed": "2"}),
        lambda b: b.update(commands={k: v for k, v in LOAD.items() if k != "queued"}),
    ],
)
def test_bad_records_raise_ipc_decode(mutate: object) -> None:
    b = beat(1)
    mutate(b)  # type: ignore[operator]
    with pytest.raises(IPCError) as info:
        decode_heartbeat(msgpack.packb(b))
    assert info.value.code.value == "E3001"


def test_not_msgpack() -> None:
    with pytest.raises(IPCError, match="not msgpack"):
        decode_heartbeat(b"\xc1")
    with pytest.raises(IPCError, match="not a map"):
        decode_heartbeat(msgpack.packb([1, 2]))
