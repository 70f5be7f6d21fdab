"""The gateway's transport encoders, decoded by discord.py's own decompression contexts."""

from __future__ import annotations

import json
import random

import pytest
import zstandard

from simulator.compression import (
    SUPPORTED_COMPRESS,
    PlainEncoder,
    ZlibStreamEncoder,
    ZstdStreamEncoder,
    make_encoder,
)
from simulator.sessions import dispatch_frame
from tests.dpy_codecs import zlib_context, zstd_context

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _messages() -> list[str]:
    """Gateway messages of every size: tiny, typical, non-ASCII, and some far over a zstd block (128 KiB)."""
    rng = random.Random(7)
    out = [dispatch_frame(i, "MESSAGE_CREATE", json.dumps({"content": "x" * i, "i": i})) for i in range(1, 40)]
    out.append('{"t":null,"s":null,"op":11,"d":null}')
    out.append(dispatch_frame(40, "MESSAGE_CREATE", json.dumps({"content": "ünïcødé ☕ 🍺"}, ensure_ascii=False)))
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(300_000))
    out.append(dispatch_frame(41, "GUILD_CREATE", json.dumps({"members": noise})))
    out.append(dispatch_frame(42, "GUILD_CREATE", json.dumps({"members": ["m"] * 200_000})))
    out += [dispatch_frame(i, "TYPING_START", json.dumps({"user_id": str(i)})) for i in range(43, 60)]
    return out


def test_zlib_stream_inflates_with_discord_py_context() -> None:
    encoder = ZlibStreamEncoder()
    inflater = zlib_context()()
    for text in _messages():
        frame = encoder.encode(text)
        assert frame.endswith(b"\x00\x00\xff\xff")
        assert inflater.decompress(frame) == text


def test_zstd_stream_decodes_frame_by_frame_with_discord_py_context() -> None:
    encoder = ZstdStreamEncoder()
    decoder = zstd_context()()
    frames = []
    for text in _messages():
        frame = encoder.encode(text)
        frames.append(frame)
        # Each frame yields its whole message at once: nothing held back for the next one.
        assert decoder.decompress(frame) == text
    # One zstd frame for the whole connection: its header (magic number) comes once, at the start.
    assert frames[0].startswith(_ZSTD_MAGIC)
    assert not any(f.startswith(_ZSTD_MAGIC) for f in frames[1:])
    # Messages refer back to earlier ones (one context for the connection): a repeat costs a few bytes.
    text = dispatch_frame(7, "MESSAGE_CREATE", json.dumps({"content": "a message worth repeating", "id": "1"}))
    first, again = encoder.encode(text), encoder.encode(text)
    assert len(again) < len(first) < len(text)
    assert [decoder.decompress(first), decoder.decompress(again)] == [text, text]


def test_zstd_stream_is_one_unfinished_frame() -> None:
    encoder = ZstdStreamEncoder()
    messages = _messages()
    stream = b"".join(encoder.encode(text) for text in messages)
    whole = zstandard.ZstdDecompressor().decompressobj()
    assert whole.decompress(stream) == "".join(messages).encode()
    assert not whole.eof  # the frame never ends, so the client's decompressobj stays usable
    params = zstandard.get_frame_parameters(stream)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN and params.window_size <= 1 << 17
    # Byte by byte across frame boundaries, the stream still decodes to the same text.
    split = zstandard.ZstdDecompressor().decompressobj()
    head = stream[:5000]
    out = b"".join(split.decompress(head[i:i + 1]) for i in range(len(head))) + split.decompress(stream[5000:])
    assert out == "".join(messages).encode()


def test_each_connection_has_its_own_stream() -> None:
    first, second = make_encoder("zstd-stream"), make_encoder("zstd-stream")
    a, b = dispatch_frame(1, "READY", '{"v":10}'), dispatch_frame(2, "GUILD_CREATE", '{"id":"1"}')
    first_frames = [first.encode(a), first.encode(b)]
    second_frame = second.encode(b)
    assert second_frame.startswith(_ZSTD_MAGIC) and not first_frames[1].startswith(_ZSTD_MAGIC)
    one, two = zstd_context()(), zstd_context()()
    assert [one.decompress(f) for f in first_frames] == [a, b]
    assert two.decompress(second_frame) == b


def test_make_encoder_answers_every_supported_value() -> None:
    assert set(SUPPORTED_COMPRESS) == {None, "zlib-stream", "zstd-stream"}
    plain = make_encoder(None)
    assert isinstance(plain, PlainEncoder) and not plain.binary and plain.name == "none"
    assert plain.encode("{}") == b"{}"
    zlib_encoder = make_encoder("zlib-stream")
    assert isinstance(zlib_encoder, ZlibStreamEncoder) and zlib_encoder.binary and zlib_encoder.name == "zlib-stream"
    zstd_encoder = make_encoder("zstd-stream")
    assert isinstance(zstd_encoder, ZstdStreamEncoder) and zstd_encoder.binary and zstd_encoder.name == "zstd-stream"
    with pytest.raises(ValueError, match="unsupported compress"):
        make_encoder("gzip")
