"""Typed IPC messages and their msgpack wire format.

Every message travelling over Redis pub/sub is one of the dataclasses below, encoded by
:func:`encode` as a msgpack map ``{"kind": ..., "v": 1, ...fields}`` (``use_bin_type=True``) and
decoded by :func:`decode` (``raw=False``). Decoding never trusts its input: anything that is not
exactly a valid message of a known kind and version raises :class:`~innkeeper.errors.IPCError`
with code ``IPC_DECODE`` and a ``reason`` in its context (``oversize``, ``too_complex``,
``not_msgpack``, ``not_a_map``, ``unknown_kind``, ``version``, ``invalid``), which the bus uses to
count drops.

Decoding is bounded before msgpack sees the bytes: the size first, then the number of objects and
the nesting (:func:`ipc.msgpack_limits.check_objects`), so a crafted message costs at most
:data:`MAX_OBJECTS` objects' work. On the wire every message travels inside a signed frame
(:mod:`ipc.frames`); this module knows nothing of signatures.

Kinds
-----
``request``
    Ask one cluster (or every cluster) to run an allowed action; answers go to ``reply_to``.
``response``
    One responder's answer to a request: a result, or an error ``{code, message}``.
``event``
    A one-way notification (a cache invalidation, a config change) that nobody answers.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import msgpack

from innkeeper.errors import ErrorCode, IPCError

from .msgpack_limits import MsgpackShapeError, check_objects

__all__ = (
    "MESSAGE_VERSION",
    "MAX_MESSAGE_BYTES",
    "MAX_OBJECTS",
    "Identity",
    "ErrorInfo",
    "Request",
    "Response",
    "Event",
    "Message",
    "encode",
    "decode",
    "new_message_id",
    "is_plain",
)

#: The version every message carries in ``v``; a decoder rejects any other.
MESSAGE_VERSION = 1
#: Largest encoded message accepted or produced (1 MiB).
MAX_MESSAGE_BYTES = 1 << 20
#: Deepest nesting of containers accepted inside ``args``, ``result`` and ``data``.
MAX_DEPTH = 32
#: Most msgpack objects (containers and scalars) one message may hold; real messages hold dozens.
MAX_OBJECTS = 20_000

#: Who sends or answers: a cluster id, or a named non-cluster client such as ``"cli-3f2a..."``.
Identity = int | str

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_IDENT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_EXPECTED = 100_000


def new_message_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a request failed: a stable :class:`~innkeeper.errors.ErrorCode` value and a message."""

    code: str
    message: str

    def as_map(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Request:
    """Ask ``expected`` responders to run ``action`` with ``args``.

    Attributes
    ----------
    id:
        Correlates the responses with this request.
    action:
        A name from the responders' handler registry (``guild_count``).
    args:
        Keyword arguments for the handler: a map with string keys.
    sender:
        The requester's identity.
    reply_to:
        The channel responses go to (the sender's own bus channel).
    expected:
        Cluster ids that should answer, or ``"all"`` for every cluster that hears it.
    timeout:
        Seconds the requester waits; responders use it to bound the handler.
    """

    id: str
    action: str
    args: dict[str, Any]
    sender: Identity
    reply_to: str
    expected: tuple[int, ...] | Literal["all"] = "all"
    timeout: float = 5.0
    v: int = MESSAGE_VERSION
    kind: ClassVar[str] = "request"

    def __post_init__(self) -> None:
        if self.expected != "all":
            object.__setattr__(self, "expected", tuple(sorted(set(self.expected))))

    def expects(self, identity: Identity) -> bool:
        """Whether ``identity`` is among the responders this request asks for."""
        return self.expected == "all" or identity in self.expected


@dataclass(frozen=True, slots=True)
class Response:
    """One responder's answer: ``ok`` with ``result``, or not ``ok`` with ``error``."""

    id: str
    cluster_id: Identity
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    v: int = MESSAGE_VERSION
    kind: ClassVar[str] = "response"


@dataclass(frozen=True, slots=True)
class Event:
    """A one-way notification named ``name`` with ``data`` (a map with string keys)."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    sender: Identity = ""
    v: int = MESSAGE_VERSION
    kind: ClassVar[str] = "event"


Message = Request | Response | Event


def _fail(reason: str, message: str) -> IPCError:
    return IPCError(f"undecodable IPC message: {message}", code=ErrorCode.IPC_DECODE, reason=reason)


def is_plain(value: Any, *, max_depth: int = MAX_DEPTH) -> bool:
    """True when ``value`` is made only of msgpack's plain types (no ext types, no tuples as keys).

    Maps must have ``str`` or ``int`` keys; floats must be finite; nesting is bounded.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, str | bytes | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
            continue
        if depth >= max_depth or isinstance(item, msgpack.ExtType):
            return False
        if isinstance(item, list | tuple):
            stack.extend((x, depth + 1) for x in item)
        elif isinstance(item, dict):
            for k, x in item.items():
                if isinstance(k, bool) or not isinstance(k, str | int):
                    return False
                stack.append((x, depth + 1))
        else:
            return False
    return True


# --- field readers: each raises IPCError(reason="invalid") naming the field --------------------------


def _get(m: Mapping[Any, Any], name: str) -> Any:
    if name not in m:
        raise _fail("invalid", f"missing field {name!r}")
    return m[name]


def _str(m: Mapping[Any, Any], name: str, pattern: re.Pattern[str] | None = None, max_len: int = 256) -> str:
    value = _get(m, name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise _fail("invalid", f"field {name!r} must be a non-empty string of at most {max_len} characters")
    if pattern is not None and not pattern.match(value):
        raise _fail("invalid", f"field {name!r} has a malformed value {value[:64]!r}")
    return value


def _identity(m: Mapping[Any, Any], name: str, *, allow_empty: bool = False) -> Identity:
    value = _get(m, name)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    if isinstance(value, str) and ((allow_empty and value == "") or _IDENT_RE.match(value)):
        return value
    raise _fail("invalid", f"field {name!r} must be a cluster id or a client name")


def _payload_map(m: Mapping[Any, Any], name: str) -> dict[str, Any]:
    value = m.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail("invalid", f"field {name!r} must be a map with string keys")
    if not is_plain(value):
        raise _fail("invalid", f"field {name!r} holds values that are not plain data")
    return value


def _expected(m: Mapping[Any, Any]) -> tuple[int, ...] | Literal["all"]:
    value = m.get("expected", "all")
    if value == "all":
        return "all"
    if (isinstance(value, list) and len(value) <= _MAX_EXPECTED
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 for x in value)):
        return tuple(sorted(set(value)))
    raise _fail("invalid", "field 'expected' must be \"all\" or a list of cluster ids")


def _timeout(m: Mapping[Any, Any]) -> float:
    value = m.get("timeout", 5.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value <= 3600):
        raise _fail("invalid", "field 'timeout' must be a number of seconds in (0, 3600]")
    return float(value)


def _error(m: Mapping[Any, Any]) -> ErrorInfo | None:
    value = m.get("error")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("invalid", "field 'error' must be a map {code, message}")
    return ErrorInfo(code=_str(value, "code", max_len=32), message=_str(value, "message", max_len=4096))


def _request(m: Mapping[Any, Any]) -> Request:
    return Request(
        id=_str(m, "id", _ID_RE, 64),
        action=_str(m, "action", _NAME_RE, 64),
        args=_payload_map(m, "args"),
        sender=_identity(m, "sender"),
        reply_to=_str(m, "reply_to", max_len=256),
        expected=_expected(m),
        timeout=_timeout(m),
    )


def _response(m: Mapping[Any, Any]) -> Response:
    ok = _get(m, "ok")
    if not isinstance(ok, bool):
        raise _fail("invalid", "field 'ok' must be a boolean")
    result = m.get("result")
    if not is_plain(result):
        raise _fail("invalid", "field 'result' holds values that are not plain data")
    error = _error(m)
    if not ok and error is None:
        raise _fail("invalid", "a failed response needs an 'error'")
    return Response(id=_str(m, "id", _ID_RE, 64), cluster_id=_identity(m, "cluster_id"), ok=ok,
                    result=result, error=error)


def _event(m: Mapping[Any, Any]) -> Event:
    return Event(name=_str(m, "name", _NAME_RE, 64), data=_payload_map(m, "data"),
                 sender=_identity(m, "sender", allow_empty=True))


_READERS: dict[str, Callable[[Mapping[Any, Any]], Message]] = {
    "request": _request, "response": _response, "event": _event,
}


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one message, validating every field.

    Raises
    ------
    IPCError
        Code ``IPC_DECODE``; ``exc.context["reason"]`` says why (``oversize``, ``too_complex``,
        ``not_msgpack``, ``not_a_map``, ``unknown_kind``, ``version``, ``invalid``).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("not_msgpack", f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise _fail("oversize", f"{len(data)} bytes is more than the {MAX_MESSAGE_BYTES}-byte limit")
    data = bytes(data)
    try:
        check_objects(data, max_objects=MAX_OBJECTS, max_depth=MAX_DEPTH + 2)
    except MsgpackShapeError as exc:
        raise _fail(exc.reason, str(exc)) from None
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types; every one means "not msgpack"
        raise _fail("not_msgpack", f"not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise _fail("not_a_map", f"expected a map, got {type(raw).__name__}")
    kind = raw.get("kind")
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        shown = kind[:32] if isinstance(kind, str) else type(kind).__name__
        raise _fail("unknown_kind", f"unknown kind {shown!r}")
    version = raw.get("v")
    if isinstance(version, bool) or version != MESSAGE_VERSION:
        raise _fail("version", f"unsupported version {version!r} (this build speaks v{MESSAGE_VERSION})")
    return reader(raw)


def _as_map(msg: Message) -> dict[str, Any]:
    if isinstance(msg, Request):
        return {"kind": "request", "v": msg.v, "id": msg.id, "action": msg.action, "args": msg.args,
                "sender": msg.sender, "reply_to": msg.reply_to,
                "expected": msg.expected if msg.expected == "all" else list(msg.expected),
                "timeout": msg.timeout}
    if isinstance(msg, Response):
        return {"kind": "response", "v": msg.v, "id": msg.id, "cluster_id": msg.cluster_id, "ok": msg.ok,
                "result": msg.result, "error": msg.error.as_map() if msg.error else None}
    if isinstance(msg, Event):
        return {"kind": "event", "v": msg.v, "name": msg.name, "data": msg.data, "sender": msg.sender}
    raise IPCError(f"cannot encode {type(msg).__name__}: not an IPC message", code=ErrorCode.INTERNAL)


def encode(msg: Message) -> bytes:
    """Encode ``msg``; the result always decodes back to an equal message.

    Raises
    ------
    IPCError
        When the message is invalid (the same checks as :func:`decode`), holds values msgpack
        cannot carry, or encodes to more than :data:`MAX_MESSAGE_BYTES`.
    """
    as_map = _as_map(msg)
    try:
        data: bytes = msgpack.packb(as_map, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise IPCError(f"cannot encode {msg.kind}: {exc}", code=ErrorCode.IPC_DECODE, reason="unencodable") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise IPCError(f"cannot send a {len(data)}-byte {msg.kind}: the limit is {MAX_MESSAGE_BYTES} bytes",
                       code=ErrorCode.IPC_DECODE, reason="oversize")
    decode(data)  # the same validation a receiver applies: never send what others would drop
    return data
