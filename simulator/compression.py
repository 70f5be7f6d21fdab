"""Transport compression of gateway frames: ``zlib-stream`` or plain text.

With ``zlib-stream`` one zlib context lives as long as the connection and every message ends with a
``Z_SYNC_FLUSH`` (``00 00 ff ff``), so a client inflates each binary frame with its own shared
context, as discord.py's ``_ZlibDecompressionContext`` does. ``zstd-stream`` is answered with plain
text frames: discord.py parses a text frame whatever it asked for (``received_message`` only
decompresses ``bytes``), and the simulator does not depend on a zstd package.
"""

from __future__ import annotations

import zlib

__all__ = ("Encoder", "PlainEncoder", "ZlibStreamEncoder", "make_encoder", "SUPPORTED_COMPRESS")

#: ``compress`` query values the gateway accepts (``None``: no compression).
SUPPORTED_COMPRESS = (None, "zlib-stream", "zstd-stream")


class Encoder:
    """Turns a gateway message (JSON text) into what one websocket frame carries."""

    __slots__ = ()

    #: Whether frames are binary (``send_bytes``) or text (``send_str``).
    binary: bool = False

    def encode(self, text: str) -> bytes:
        raise NotImplementedError


class PlainEncoder(Encoder):
    """Text frames of plain JSON."""

    __slots__ = ()
    binary = False

    def encode(self, text: str) -> bytes:
        return text.encode()


class ZlibStreamEncoder(Encoder):
    """One continuous zlib stream per connection, flushed with ``Z_SYNC_FLUSH`` after each message.

    Level 1 keeps the server cheap; any level inflates the same way.
    """

    __slots__ = ("_zc",)
    binary = True

    def __init__(self, level: int = 1) -> None:
        self._zc = zlib.compressobj(level)

    def encode(self, text: str) -> bytes:
        zc = self._zc
        return zc.compress(text.encode()) + zc.flush(zlib.Z_SYNC_FLUSH)


def make_encoder(compress: str | None) -> Encoder:
    """The encoder for a ``compress`` query value (one of :data:`SUPPORTED_COMPRESS`)."""
    if compress == "zlib-stream":
        return ZlibStreamEncoder()
    if compress in (None, "zstd-stream"):
        return PlainEncoder()
    raise ValueError(f"unsupported compress value {compress!r}")
