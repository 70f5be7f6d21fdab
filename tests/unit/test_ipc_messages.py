"""IPC messages: every kind round-trips; any other input raises IPCError and nothing else."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from innkeeper.errors import ErrorCode, IPCError
from ipc.messages import (
    MAX_MESSAGE_BYTES,
    MESSAGE_VERSION,
    ErrorInfo,
    Event,
    Request,
    Response,
    decode,
    encode,
    is_plain,
    new_message_id,
)

REQUEST = Request(id=new_message_id(), action="guild_count", args={"shard": 3, "deep": {"a": [1, 2.5, None, b"x"]}},
                  sender="cli-abc123", reply_to="ikt:bus:to:cli-abc123", expected=(3, 1, 2), timeout=2.5)


def _raw(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def _reason(data: bytes) -> str:
    with pytest.raises(IPCError) as info:
        decode(data)
    assert info.value.code is ErrorCode.IPC_DECODE
    return str(info.value.context["reason"])


@pytest.mark.parametrize("msg", [
    REQUEST,
    Request(id="a1", action="ping", args={}, sender=0, reply_to="p:bus:to:0"),
    Response(id="a1", cluster_id=2, ok=True, result={"guilds": 12, 7: "int keys are fine"}),
    Response(id="a1", cluster_id=2, ok=True, result=None),
    Response(id="a1", cluster_id="status", ok=False, error=ErrorInfo(code="E3003", message="unknown action 'x'")),
    Event(name="cache_invalidate", data={"namespace": "settings", "keys": ["1", "2"]}, sender=4),
    Event(name="config.reload"),
])
def test_every_kind_round_trips(msg: Request | Response | Event) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert msgpack.unpackb(data, raw=False, strict_map_key=False)["v"] == MESSAGE_VERSION


def test_expected_is_normalised_and_checked() -> None:
    assert REQUEST.expected == (1, 2, 3)
    assert REQUEST.expects(2) and not REQUEST.expects(4)
    everyone = Request(id="x", action="ping", args={}, sender=1, reply_to="c")
    assert everyone.expected == "all" and everyone.expects(99)


def test_each_failure_names_its_reason() -> None:
    good = msgpack.unpackb(encode(REQUEST), raw=False, strict_map_key=False)
    assert _reason(b"\xc1garbage") == "not_msgpack"
    assert _reason(encode(REQUEST) + b"\x00") == "not_msgpack"  # trailing bytes
    assert _reason(_raw()[:0] + msgpack.packb([1, 2, 3])) == "not_a_map"
    assert _reason(_raw(**{**good, "kind": "launch_missiles"})) == "unknown_kind"
    assert _reason(_raw(**{k: v for k, v in good.items() if k != "kind"})) == "unknown_kind"
    assert _reason(_raw(**{**good, "v": 2})) == "version"
    assert _reason(_raw(**{**good, "v": True})) == "version"
    assert _reason(_raw(**{k: v for k, v in good.items() if k != "v"})) == "version"
    assert _reason(_raw(**{k: v for k, v in good.items() if k != "id"})) == "invalid"
    assert _reason(_raw(**{**good, "args": [1, 2]})) == "invalid"
    assert _reason(_raw(**{**good, "args": {1: "non-string key"}})) == "invalid"
    assert _reason(_raw(**{**good, "action": "Robert'); DROP TABLE"})) == "invalid"
    assert _reason(_raw(**{**good, "expected": [1, "two"]})) == "invalid"
    assert _reason(_raw(**{**good, "timeout": -1})) == "invalid"
    assert _reason(_raw(**{**good, "sender": True})) == "invalid"
    assert _reason(_raw(kind="response", v=1, id="x", cluster_id=1, ok=False)) == "invalid"  # no error
    assert _reason(_raw(kind="response", v=1, id="x", cluster_id=1, ok=1, result=None)) == "invalid"
    assert _reason(b"\x00" * (MAX_MESSAGE_BYTES + 1)) == "oversize"


def test_ext_types_and_deep_nesting_are_rejected() -> None:
    ext = _raw(kind="event", v=1, name="x", data={"t": msgpack.ExtType(5, b"abc")}, sender=1)
    assert _reason(ext) == "invalid"
    deep: Any = "leaf"
    for _ in range(40):
        deep = [deep]
    assert _reason(_raw(kind="event", v=1, name="x", data={"d": deep}, sender=1)) == "too_complex"  # before msgpack
    within: Any = "leaf"
    for _ in range(32):  # past is_plain's limit, within the pre-check's margin
        within = [within]
    assert _reason(_raw(kind="event", v=1, name="x", data={"d": within}, sender=1)) == "invalid"
    assert not is_plain(float("nan")) and is_plain({"a": [1, {"b": None}]})


def test_encode_refuses_what_receivers_would_drop() -> None:
    with pytest.raises(IPCError) as info:
        encode(Event(name="big", data={"blob": b"x" * MAX_MESSAGE_BYTES}))
    assert info.value.context["reason"] == "oversize"
    with pytest.raises(IPCError):
        encode(Event(name="obj", data={"o": object()}))
    with pytest.raises(IPCError):
        encode(Request(id="bad id with spaces", action="ping", args={}, sender=1, reply_to="c"))


def test_non_bytes_input() -> None:
    with pytest.raises(IPCError):
        decode("a string")  # type: ignore[arg-type]


_ints = st.integers(-(2**63), 2**64 - 1)
_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) \
    | st.binary(max_size=20)
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=8) | _ints, inner, max_size=5), max_leaves=30)
_message_like = st.fixed_dictionaries(
    {"kind": st.sampled_from(["request", "response", "event", "other"]), "v": st.sampled_from([1, 1, 1, 2, "1"])},
    optional={"id": st.text(max_size=70) | _ints, "action": st.text(max_size=10) | st.sampled_from(["ping"]),
              "args": _values, "sender": _values, "reply_to": st.text(max_size=5), "expected": _values,
              "timeout": _values, "cluster_id": _values, "ok": _values, "result": _values, "error": _values,
              "name": st.sampled_from(["x", "cache.drop", "BAD NAME"]), "data": _values},
)


def _decode_is_total(data: bytes) -> None:
    try:
        msg = decode(data)
    except IPCError as exc:
        assert exc.code is ErrorCode.IPC_DECODE
        assert exc.context["reason"] in {"oversize", "too_complex", "not_msgpack", "not_a_map", "unknown_kind",
                                         "version", "invalid"}
        return
    assert isinstance(msg, Request | Response | Event)
    assert decode(encode(msg)) == msg


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_ipcerror(data: bytes) -> None:
    _decode_is_total(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_random_msgpack_values_never_escape_ipcerror(value: Any) -> None:
    _decode_is_total(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_message_like)
def test_random_message_like_maps_never_escape_ipcerror(value: dict[str, Any]) -> None:
    _decode_is_total(msgpack.packb(value, use_bin_type=True))
