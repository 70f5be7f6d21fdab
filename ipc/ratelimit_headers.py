"""Discord's rate-limit headers, parsed into what the shared limiter records.

A response carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``, ``-Reset-After`` and
``-Bucket``; a 429 also carries ``X-RateLimit-Global``, ``X-RateLimit-Scope`` (``user``,
``global`` or ``shared``) and ``Retry-After``, and its JSON body ``retry_after`` and ``global``
(Discord's ``developers/topics/rate-limits.mdx``). :class:`ResponseInfo` reads them leniently: a
missing or malformed header is ``None``, never an error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

__all__ = ("ResponseInfo",)


class ResponseInfo:
    """What :meth:`SharedRateLimiter.update` needs from a response, parsed from its headers."""

    __slots__ = ("status", "limit", "remaining", "reset_after", "bucket", "scope", "retry_after", "is_global")

    def __init__(self, status: int, headers: Mapping[str, str], *, body_retry_after: float | None = None,
                 body_global: bool | None = None) -> None:
        self.status = status
        get = headers.get
        self.bucket: str = get("X-RateLimit-Bucket") or ""
        self.scope: str = (get("X-RateLimit-Scope") or "").lower()
        self.limit: int | None = _as_int(get("X-RateLimit-Limit"))
        self.remaining: int | None = _as_int(get("X-RateLimit-Remaining"))
        reset_after = _as_float(get("X-RateLimit-Reset-After"))
        if reset_after is None:
            reset = _as_float(get("X-RateLimit-Reset"))
            reset_after = None if reset is None else max(0.0, reset - time.time())
        self.reset_after: float | None = reset_after
        retry = body_retry_after if body_retry_after is not None else _as_float(get("Retry-After"))
        if retry is None:
            retry = reset_after if reset_after is not None else 1.0
        self.retry_after: float = max(0.0, retry)
        header_global = (get("X-RateLimit-Global") or "").lower() == "true"
        self.is_global: bool = bool(body_global) or header_global or self.scope == "global"

    @property
    def has_limits(self) -> bool:
        return self.limit is not None and self.remaining is not None and self.reset_after is not None

    @property
    def counts_as_invalid(self) -> bool:
        """401, 403 and 429 count toward Discord's ban, except 429s with scope ``shared``."""
        return self.status in (401, 403) or (self.status == 429 and self.scope != "shared")


def _as_int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _as_float(value: str | None) -> float | None:
    try:
        out = None if value is None else float(value)
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) else None
