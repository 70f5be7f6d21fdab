"""discord.py's own gateway decompression contexts, for tests that must speak a chosen codec.

discord.py defines only one of them, at import: ``_ZstdDecompressionContext`` when a zstd package
(``zstandard``, or ``compression.zstd`` on Python 3.14) is importable, else
``_ZlibDecompressionContext``; ``_ActiveDecompressionContext`` is that one, and its
``COMPRESSION_TYPE`` is what ``DiscordWebSocket.from_client`` puts in the URL's ``compress=``.
With ``zstandard`` installed (a main dependency), the zlib one is obtained by running a private copy
of ``discord/utils.py`` with the zstd modules hidden: discord.py's code, untouched.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any

import discord.utils

__all__ = ("ZSTD_MODULES", "zlib_context", "zstd_context")

#: The modules discord.py tries for zstd, in its order.
ZSTD_MODULES = ("zstandard", "compression.zstd")
_MISSING = object()


@functools.cache
def zlib_context() -> type[Any]:
    """discord.py's ``_ZlibDecompressionContext`` class (its ``COMPRESSION_TYPE`` is ``zlib-stream``)."""
    found = getattr(discord.utils, "_ZlibDecompressionContext", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    spec = importlib.util.spec_from_file_location("discord._utils_without_zstd", discord.utils.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {name: sys.modules.get(name, _MISSING) for name in ZSTD_MODULES}
    try:
        for name in ZSTD_MODULES:
            sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules: ImportError
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is _MISSING:
                del sys.modules[name]
            else:
                sys.modules[name] = old  # type: ignore[assignment]
    context: type[Any] = module._ZlibDecompressionContext
    assert context.COMPRESSION_TYPE == "zlib-stream"
    return context


def zstd_context() -> type[Any]:
    """discord.py's ``_ZstdDecompressionContext`` class (needs a zstd package, which the project has)."""
    context: type[Any] = discord.utils._ZstdDecompressionContext  # type: ignore[attr-defined]
    assert context.COMPRESSION_TYPE == "zstd-stream"
    return context
