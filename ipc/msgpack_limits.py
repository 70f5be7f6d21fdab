"""A cheap pre-check of msgpack bytes: how many objects they hold, before anything is built.

Decoding cost grows with the number of objects, not with the byte count: one mebibyte of
``0x90`` bytes is a million empty lists, which take msgpack a third of a second (holding the GIL)
and the field checks several seconds more. :func:`check_objects` walks the bytes without building
anything and refuses input that holds more than a budget of objects, that nests too deep, or that
is not exactly one well-formed msgpack object, so :func:`ipc.messages.decode` only ever hands
msgpack input whose decoding is bounded.

The walk is plain Python, so in a worker thread it gives the event loop its turn every few
milliseconds (the GIL's switch interval), unlike msgpack's C unpacker.
"""

from __future__ import annotations

__all__ = ("check_objects", "MsgpackShapeError")


class MsgpackShapeError(ValueError):
    """The bytes are not one msgpack object within the limits; ``reason`` says which limit."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# For each first byte of the 0xc0-0xdf range: (bytes of length field, fixed payload bytes, kind)
# kind: "s" scalar, "b" length-prefixed bytes (str/bin), "e" ext (length + 1 type byte),
# "a" array header, "m" map header, "x" never used.
_C0: dict[int, tuple[int, int, str]] = {
    0xC0: (0, 0, "s"), 0xC1: (0, 0, "x"), 0xC2: (0, 0, "s"), 0xC3: (0, 0, "s"),
    0xC4: (1, 0, "b"), 0xC5: (2, 0, "b"), 0xC6: (4, 0, "b"),
    0xC7: (1, 1, "e"), 0xC8: (2, 1, "e"), 0xC9: (4, 1, "e"),
    0xCA: (0, 4, "s"), 0xCB: (0, 8, "s"),
    0xCC: (0, 1, "s"), 0xCD: (0, 2, "s"), 0xCE: (0, 4, "s"), 0xCF: (0, 8, "s"),
    0xD0: (0, 1, "s"), 0xD1: (0, 2, "s"), 0xD2: (0, 4, "s"), 0xD3: (0, 8, "s"),
    0xD4: (0, 2, "s"), 0xD5: (0, 3, "s"), 0xD6: (0, 5, "s"), 0xD7: (0, 9, "s"), 0xD8: (0, 17, "s"),
    0xD9: (1, 0, "b"), 0xDA: (2, 0, "b"), 0xDB: (4, 0, "b"),
    0xDC: (2, 0, "a"), 0xDD: (4, 0, "a"), 0xDE: (2, 0, "m"), 0xDF: (4, 0, "m"),
}


def check_objects(data: bytes, *, max_objects: int, max_depth: int) -> int:
    """Walk ``data`` as one msgpack object and return how many objects it holds.

    Raises
    ------
    MsgpackShapeError
        ``reason`` is ``too_complex`` for more than ``max_objects`` objects or containers nested
        deeper than ``max_depth``, and ``not_msgpack`` for anything that is not exactly one
        well-formed msgpack object (truncated, trailing bytes, the unused byte 0xc1).
    """
    size = len(data)
    pos = 0
    count = 0
    # one entry per open container: objects it still owes
    owed = [1]
    while owed:
        if owed[-1] == 0:
            owed.pop()
            continue
        owed[-1] -= 1
        if pos >= size:
            raise MsgpackShapeError("not_msgpack", "truncated msgpack")
        count += 1
        if count > max_objects:
            raise MsgpackShapeError("too_complex", f"more than {max_objects} objects")
        b = data[pos]
        pos += 1
        children = 0
        if b <= 0x7F or b >= 0xE0:
            continue  # fixint
        if b <= 0x8F:
            children = 2 * (b & 0x0F)
        elif b <= 0x9F:
            children = b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F
        else:
            length_bytes, fixed, kind = _C0[b]
            if kind == "x":
                raise MsgpackShapeError("not_msgpack", "the unused byte 0xc1")
            length = int.from_bytes(data[pos:pos + length_bytes], "big") if length_bytes else 0
            if pos + length_bytes > size:
                raise MsgpackShapeError("not_msgpack", "truncated msgpack")
            pos += length_bytes + fixed
            if kind in ("b", "e"):
                pos += length
            elif kind == "a":
                children = length
            elif kind == "m":
                children = 2 * length
        if children:
            # every object is at least one byte: a header promising more than is left is a lie
            if children > size - pos:
                raise MsgpackShapeError("not_msgpack", "a container longer than the data")
            if len(owed) > max_depth:
                raise MsgpackShapeError("too_complex", f"containers nested deeper than {max_depth}")
            owed.append(children)
    if pos != size:
        raise MsgpackShapeError("not_msgpack", "truncated msgpack" if pos > size else "trailing bytes")
    return count
