"""Transport compression of gateway frames: ``zstd-stream``, ``zlib-stream`` or plain text.

Both streaming codecs keep one compression context for the whole connection and flush after every
message, so each websocket frame carries exactly one gateway message and a client decodes it as
soon as it arrives, with one decompression context per connection:

- ``zlib-stream``: every message ends with a ``Z_SYNC_FLUSH`` (``00 00 ff ff``), the suffix
  discord.py's ``_ZlibDecompressionContext`` waits for before it inflates its buffer.
- ``zstd-stream``: one zstd frame per connection that is never ended. Every message is flushed as
  complete blocks (``ZSTD_e_flush``; the first message also carries the frame header), so
  discord.py's ``_ZstdDecompressionContext`` (a ``zstandard`` ``decompressobj``, or
  ``compression.zstd.ZstdDecompressor`` on Python 3.14) returns the whole message from each frame.
  Ending the zstd frame would end the client's ``decompressobj`` with it, so the server never does,
  as Discord documents ("each websocket message corresponds to a single gateway message, but does
  not end a zstd frame").
"""

from __future__ import annotations

import zlib

import zstandard

__all__ = ("Encoder", "PlainEncoder", "ZlibStreamEncoder", "ZstdStreamEncoder", "make_encoder", "SUPPORTED_COMPRESS")

#: zstd level 1 (the fastest non-negative level) with a 128 KiB window instead of level 1's 512 KiB:
#: about 1 MB of compressor state per connection instead of 1.4 MB, and a smaller window for the
#: client to keep, for a few percent of ratio. Built once; every connection gets its own compressor.
_ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(1, window_log=17)
_ZSTD_FLUSH_BLOCK = zstandard.COMPRESSOBJ_FLUSH_BLOCK


class Encoder:
    """Turns a gateway message (JSON text) into what one websocket frame carries."""

    __slots__ = ()

    #: The ``compress`` query value this encoder answers (``"none"`` for plain text).
    name: str = "none"
    #: Whether frames are binary (``send_bytes``) or text (``send_str``).
    binary: bool = False

    def encode(self, text: str) -> bytes:
        """The frame for one message.

        Parameters
        ----------
        text:
            One complete gateway message (JSON).

        Returns
        -------
        bytes
            What the frame carries: the UTF-8 text, or the next piece of the connection's stream.
        """
        raise NotImplementedError


class PlainEncoder(Encoder):
    """Text frames of plain JSON."""

    __slots__ = ()
    name = "none"
    binary = False

    def encode(self, text: str) -> bytes:
        return text.encode()


class ZlibStreamEncoder(Encoder):
    """One continuous zlib stream per connection, flushed with ``Z_SYNC_FLUSH`` after each message.

    Level 1 keeps the server cheap; any level inflates the same way.
    """

    __slots__ = ("_zc",)
    name = "zlib-stream"
    binary = True

    def __init__(self, level: int = 1) -> None:
        self._zc = zlib.compressobj(level)

    def encode(self, text: str) -> bytes:
        zc = self._zc
        return zc.compress(text.encode()) + zc.flush(zlib.Z_SYNC_FLUSH)


class ZstdStreamEncoder(Encoder):
    """One zstd frame per connection, never ended; each message is flushed as complete blocks.

    Parameters
    ----------
    params:
        Compression parameters; by default level 1 with a 128 KiB window.
    """

    __slots__ = ("_cctx", "_compress", "_flush")
    name = "zstd-stream"
    binary = True

    def __init__(self, params: zstandard.ZstdCompressionParameters | None = None) -> None:
        # A ZstdCompressor runs one stream at a time, so each connection needs its own.
        self._cctx = zstandard.ZstdCompressor(compression_params=params or _ZSTD_PARAMS)
        stream = self._cctx.compressobj()
        self._compress = stream.compress
        self._flush = stream.flush

    def encode(self, text: str) -> bytes:
        # compress() usually returns b"" (zstd buffers the input); the flush emits the message's blocks.
        return self._compress(text.encode()) + self._flush(_ZSTD_FLUSH_BLOCK)


_ENCODERS: dict[str | None, type[Encoder]] = {
    None: PlainEncoder,
    "zlib-stream": ZlibStreamEncoder,
    "zstd-stream": ZstdStreamEncoder,
}

#: ``compress`` query values the gateway accepts (``None``: no compression).
SUPPORTED_COMPRESS: tuple[str | None, ...] = tuple(_ENCODERS)


def make_encoder(compress: str | None) -> Encoder:
    """A fresh encoder (with its own stream context) for one connection.

    Parameters
    ----------
    compress:
        The ``compress`` query value, one of :data:`SUPPORTED_COMPRESS`.

    Raises
    ------
    ValueError
        For any other value (the gateway refuses those before it gets here).
    """
    try:
        cls = _ENCODERS[compress]
    except KeyError:
        raise ValueError(f"unsupported compress value {compress!r}") from None
    return cls()
