"""Compact JSON as Discord sends it: one encoder for every payload the simulator writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ("dumps",)

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: Compact JSON text of ``obj`` (no spaces, UTF-8 left as is).
dumps: Callable[[Any], str] = _ENCODER.encode
