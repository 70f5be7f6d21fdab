"""From a message to a signed frame on a channel, and back, without stalling the event loop.

:func:`pack` encodes a message (:mod:`ipc.messages`) and seals it for one channel
(:mod:`ipc.signing`). :func:`unpack` checks a received frame's size before anything else, then
its signature and age, and only then decodes the body. Frames up to :data:`INLINE_BYTES` are
handled on the event loop (microseconds to a few milliseconds); larger ones are verified and
decoded in a worker thread, where hashing releases the GIL and the bounded pre-check of the body
(:mod:`ipc.msgpack_limits`) yields it every few milliseconds, so heartbeats and the gateway keep
running while a large frame is examined.

Both the bus (:mod:`ipc.bus`) and the shared cache's invalidations (:mod:`ipc.cache`) speak
through these two functions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from innkeeper.errors import ErrorCode, IPCError

from .messages import MAX_MESSAGE_BYTES, Message, decode, encode
from .signing import MAX_HEADER_BYTES

if TYPE_CHECKING:
    from .signing import FrameSigner

__all__ = ("Frame", "pack", "unpack", "MAX_FRAME_BYTES", "INLINE_BYTES")

#: Largest frame accepted: the largest message plus the largest header.
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + MAX_HEADER_BYTES
#: Frames up to this size are verified and decoded on the event loop; larger ones in a thread.
INLINE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Frame:
    """A verified, decoded frame: the message, who signed it (key id) and when it was sent."""

    message: Message
    key_id: str
    sent_at: float


def pack(signer: FrameSigner, channel: str, msg: Message) -> bytes:
    """``msg`` encoded and signed for ``channel``.

    Raises
    ------
    IPCError
        When the message cannot be encoded (see :func:`ipc.messages.encode`).
    """
    return signer.seal(channel, encode(msg))


def _open(signer: FrameSigner, channel: str, data: bytes) -> Frame:
    opened = signer.open(channel, data)
    return Frame(decode(opened.body), opened.key_id, opened.sent_at)


async def unpack(signer: FrameSigner, channel: str, data: bytes) -> Frame:
    """Check, verify and decode a frame received on ``channel``.

    Raises
    ------
    IPCError
        ``context["reason"]`` names why it was refused: ``oversize`` (checked first, on the
        length alone), the signature reasons of :meth:`ipc.signing.FrameSigner.open`, or the
        decoding reasons of :func:`ipc.messages.decode`.
    """
    if len(data) > MAX_FRAME_BYTES:
        raise IPCError(f"IPC frame refused: {len(data)} bytes is more than the {MAX_FRAME_BYTES}-byte limit",
                       code=ErrorCode.IPC_DECODE, reason="oversize")
    if len(data) <= INLINE_BYTES:
        return _open(signer, channel, data)
    return await asyncio.to_thread(_open, signer, channel, data)
