"""Signed IPC frames: what verifies, what does not and why, key rotation, and the bounded decoder."""

from __future__ import annotations

import base64
import logging
import struct
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from innkeeper.errors import ConfigError, ErrorCode, IPCError
from ipc.frames import MAX_FRAME_BYTES, pack, unpack
from ipc.messages import MAX_OBJECTS, Event, Request, decode
from ipc.msgpack_limits import MsgpackShapeError, check_objects
from ipc.signing import FrameSigner

K1 = ("k1", b"1" * 32)
K2 = ("k2", b"2" * 32)
CHANNEL = "ikt:bus:to:3"
REQUEST = Request(id="r1", action="ping", args={"n": 1}, sender="cli-x", reply_to="ikt:bus:to:cli-x")


def _reason(signer: FrameSigner, frame: bytes, channel: str = CHANNEL) -> str:
    with pytest.raises(IPCError) as info:
        signer.open(channel, frame)
    assert info.value.code is ErrorCode.IPC_UNAUTHENTICATED
    return str(info.value.context["reason"])


def test_a_sealed_frame_opens_with_its_body_key_and_time() -> None:
    signer = FrameSigner([K1])
    frame = signer.seal(CHANNEL, b"body", sent_at=1_700_000_000.123)
    opened = FrameSigner([K1], clock=lambda: 1_700_000_001.0).open(CHANNEL, frame)
    assert opened.body == b"body" and opened.key_id == "k1" and opened.sent_at == pytest.approx(1_700_000_000.123)


def test_every_way_of_not_being_signed_is_refused_and_named() -> None:
    signer = FrameSigner([K1])
    frame = signer.seal(CHANNEL, b"hello")
    assert _reason(signer, b"") == "unsigned"
    assert _reason(signer, msgpack.packb({"kind": "request"})) == "unsigned"  # an old, unsigned message
    assert _reason(signer, frame[:10]) == "unsigned"  # a truncated header
    assert _reason(signer, FrameSigner([("k9", b"9" * 32)]).seal(CHANNEL, b"hello")) == "unknown_key"
    assert _reason(signer, FrameSigner([("k1", b"x" * 32)]).seal(CHANNEL, b"hello")) == "bad_signature"  # forged
    assert _reason(signer, frame, "ikt:bus:all") == "bad_signature"  # replayed on another channel
    assert _reason(signer, frame[:-1] + b"!") == "bad_signature"  # the body changed


def test_no_single_byte_change_is_accepted() -> None:
    signer = FrameSigner([K1])
    frame = signer.seal(CHANNEL, b"the body")
    for i in range(len(frame)):
        tampered = bytearray(frame)
        tampered[i] ^= 0x01
        assert _reason(signer, bytes(tampered)) in {"unsigned", "unknown_key", "bad_signature", "stale"}, i


def test_stale_and_future_frames_are_refused() -> None:
    now = [1_000_000.0]
    signer = FrameSigner([K1], max_age_s=30, clock=lambda: now[0])
    assert signer.open(CHANNEL, signer.seal(CHANNEL, b"x", sent_at=now[0] - 29)).body == b"x"
    assert signer.open(CHANNEL, signer.seal(CHANNEL, b"x", sent_at=now[0] + 29)).body == b"x"  # a clock slightly ahead
    assert _reason(signer, signer.seal(CHANNEL, b"x", sent_at=now[0] - 31)) == "stale"
    assert _reason(signer, signer.seal(CHANNEL, b"x", sent_at=now[0] + 31)) == "stale"
    frame = signer.seal(CHANNEL, b"x")
    now[0] += 31  # the same frame, replayed later
    assert _reason(signer, frame) == "stale"


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    old = FrameSigner([K1])  # not yet restarted
    adding = FrameSigner([K1, K2])  # step 1: the new key is accepted everywhere, still signing with the old one
    switched = FrameSigner([K2, K1])  # step 2: signing with the new key, the old one still accepted
    done = FrameSigner([K2])  # step 3: the old key is gone
    assert adding.key_id == "k1" and switched.key_id == "k2" and switched.key_ids == ("k2", "k1")
    for sender, receiver in [(old, adding), (adding, old), (adding, switched), (switched, adding),
                             (switched, done), (done, switched)]:
        assert receiver.open(CHANNEL, sender.seal(CHANNEL, b"x")).body == b"x"
    assert _reason(old, done.seal(CHANNEL, b"x")) == "unknown_key"  # why step 1 comes first


def test_parse_names_the_variable_and_never_echoes_a_key(caplog: pytest.LogCaptureFixture) -> None:
    key = base64.b64encode(b"s" * 32).decode()
    signer = FrameSigner.parse([f"ipc2={key}", "ipc1=" + base64.urlsafe_b64encode(b"t" * 32).decode().rstrip("=")])
    assert signer.key_ids == ("ipc2", "ipc1")
    for bad in ([], ["nokey"], ["k=!!!"], [f"k={base64.b64encode(b'short').decode()}"], [f"k={key}", f"k={key}"],
                [f"bad id={key}"]):
        with pytest.raises(ConfigError) as info:
            FrameSigner.parse(bad)
        assert info.value.context["variable"] == "INNKEEPER_IPC_KEYS"
        assert key not in str(info.value)
    with caplog.at_level(logging.WARNING, logger="ipc.signing"):
        dev = FrameSigner.parse(["dev"], allow_dev=True)
    assert dev.key_id == "dev" and "development key" in caplog.text
    assert FrameSigner.parse(["dev"], allow_dev=True).open(CHANNEL, dev.seal(CHANNEL, b"x")).body == b"x"  # all agree
    with pytest.raises(ConfigError, match="local simulator"):  # never against Discord
        FrameSigner.parse(["dev"])


async def test_pack_and_unpack_large_frames_off_the_loop() -> None:
    signer = FrameSigner([K1])
    small = Event(name="x", data={"k": "v"})
    big = Event(name="x", data={"blob": b"b" * 200_000})
    for msg in (small, big):
        frame = await unpack(signer, CHANNEL, pack(signer, CHANNEL, msg))
        assert frame.message == msg and frame.key_id == "k1" and frame.sent_at == pytest.approx(time.time(), abs=5)
    with pytest.raises(IPCError) as info:
        await unpack(signer, CHANNEL, b"\x00" * (MAX_FRAME_BYTES + 1))
    assert info.value.context["reason"] == "oversize"


# --- the bounded decoder -------------------------------------------------------------------------


def _crafted(n: int, filler: bytes = b"\x90") -> bytes:
    """An event whose data holds one array of ``n`` tiny objects (``0x90``: an empty list each)."""
    head = msgpack.packb({"kind": "event", "v": 1, "name": "x", "sender": "", "data": {"a": None}})
    return head.replace(b"\xa1a\xc0", b"\xa1a\xdd" + struct.pack(">I", n) + filler * n)


def test_too_many_objects_are_refused_before_msgpack_builds_them() -> None:
    with pytest.raises(IPCError) as info:
        decode(_crafted(1_000_000))  # a million empty lists: seconds of work and 130 MB before the limit
    assert info.value.context["reason"] == "too_complex"
    assert isinstance(decode(_crafted(MAX_OBJECTS - 20)), Event)  # the budget itself is fine


def test_check_objects_counts_and_refuses() -> None:
    assert check_objects(msgpack.packb({"a": [1, 2, {"b": None}]}), max_objects=100, max_depth=5) == 8
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    with pytest.raises(MsgpackShapeError) as info:
        check_objects(msgpack.packb(deep), max_objects=100, max_depth=5)
    assert info.value.reason == "too_complex"
    for bad in (b"", b"\xc1", b"\x92\x01", msgpack.packb([1]) + b"\x00", b"\xdd\xff\xff\xff\xff",
                b"\xdb\x00\x00\x00\x09ab"):
        with pytest.raises(MsgpackShapeError) as info:
            check_objects(bad, max_objects=100, max_depth=5)
        assert info.value.reason == "not_msgpack", bad


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20),
    max_leaves=60)


def _count(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(1 + _count(v) for v in value.values())
    return 1


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_check_objects_agrees_with_msgpack(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert check_objects(data, max_objects=10_000, max_depth=100) == _count(value)
    for cut in {0, len(data) // 2, len(data) - 1}:
        if cut < len(data):
            with pytest.raises(MsgpackShapeError):
                check_objects(data[:cut], max_objects=10_000, max_depth=100)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_check_objects_on_random_bytes_agrees_with_msgpack(data: bytes) -> None:
    try:
        check_objects(data, max_objects=10_000, max_depth=100)
    except MsgpackShapeError:
        return
    # what the walk accepts is well-formed: msgpack may refuse a value (bad UTF-8, a list as a key), never the shape
    try:
        msgpack.unpackb(data, raw=True, strict_map_key=False, ext_hook=lambda code, payload: (code, payload))
    except (msgpack.ExtraData, msgpack.OutOfData, msgpack.FormatError, msgpack.StackError):
        raise
    except (TypeError, ValueError):
        pass
